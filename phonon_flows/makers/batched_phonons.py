"""BatchedPhononMaker: several materials' phonons in ONE job with ONE loaded model.

A screening campaign on a GPU (or a CPU worker) pays the model load and the job overhead once
for a pack of materials, and the displaced supercells of all of them share the engine's batches
(:func:`phonon_flows.engines.batching.compute_grouped`). The science is the same as
:class:`~phonon_flows.makers.phonons.PhononMaker`'s force-engine path (same settings, same core
functions, same PhononDoc per material); only the packing differs.

The job's output is the list of PhononDocs (their large fields go to the ``data`` store, as for
PhononMaker). A material that fails gets a failed PhononDoc; the others carry on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from jobflow import job
from pymatgen.core import Structure

from phonon_flows.core import phonons as ph_core
from phonon_flows.errors import CalculationError, InputError, PhononFlowsError
from phonon_flows.core.structures import as_pymatgen_structure, material_name
from phonon_flows import engines  # engines.get_engine is looked up when a job runs (tests replace it)
from phonon_flows.engines import engine_category, guess_engine_info
from phonon_flows.engines.batching import compute_grouped
from phonon_flows.makers.base import set_category
from phonon_flows.makers.phonons import (
    PhononMaker,
    failed_phonon_doc,
    phonon_doc_from_phonopy,
    phonon_settings,
    with_job_store,
)
from phonon_flows.schemas.phonon import PHONON_DATA_FIELDS, PhononDoc

logger = logging.getLogger(__name__)


def phonons_for_many(
    structures: Sequence[Structure],
    engine: Any,
    settings: dict | None = None,
    supercell_matrices: Sequence[Any] | None = None,
    material_ids: Sequence[str | None] | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
    postprocess_workers: int = 0,
) -> list[PhononDoc]:
    """PhononDocs of several materials with one loaded :class:`~phonon_flows.engines.base.ForceEngine`.

    ``supercell_matrices``: one per structure (None entries: chosen as PhononMaker does).

    ``postprocess_workers``: 0 runs everything in this process, one material after the other.
    With N > 0, phonopy's work (symmetry and displacements before the forces; force constants,
    mesh, DOS, bands and the document after) runs in N worker processes while this process runs
    the engine, so the model is never idle waiting for phonopy and phonopy's (mostly
    single-threaded) work spreads over the CPU cores. On CPU the engine then keeps
    ``cpus - N`` torch threads. Same numbers either way.
    """
    settings = settings or phonon_settings()
    structures = [as_pymatgen_structure(s) for s in structures]
    n = len(structures)
    smats = list(supercell_matrices) if supercell_matrices is not None else [None] * n
    ids_in = list(material_ids) if material_ids is not None else [None] * n
    if len(smats) != n or len(ids_in) != n:
        raise InputError(f"{n} structures, {len(smats)} supercell matrices and {len(ids_in)} material ids")
    ids = [material_name(s, m) for s, m in zip(structures, ids_in, strict=True)]
    if postprocess_workers and postprocess_workers > 0 and n > 1:
        import multiprocessing as mp

        if mp.current_process().daemon:  # a daemonic process may not start workers: run in this one
            logger.warning("phonopy workers cannot start from a daemonic process; running them in this one")
        else:
            return _phonons_pipelined(structures, engine, settings, smats, ids, store_force_constants,
                                      store_phonopy_yaml, int(postprocess_workers))

    info = engine.info
    docs: list[PhononDoc | None] = [None] * n
    prepared: dict[int, tuple] = {}
    for i, (s, smat, mid) in enumerate(zip(structures, smats, ids, strict=True)):
        try:
            prepared[i] = ph_core.prepare_displacements(s, smat, settings, mid, None)
        except PhononFlowsError as exc:
            docs[i] = failed_phonon_doc(s, info, [str(exc.with_material(mid, "phonon"))], settings, mid, smat)

    order = sorted(prepared)
    results = compute_grouped(engine, [prepared[i][2] for i in order], [ids[i] for i in order])
    for i, res in zip(order, results, strict=True):
        phonon, smat, _supercells = prepared[i]
        docs[i] = _finish(phonon, smat, res, structures[i], info, settings, ids[i], store_force_constants,
                          store_phonopy_yaml)
    return docs  # type: ignore[return-value]


def _finish(phonon, smat, res, structure, info, settings, mid, store_force_constants, store_phonopy_yaml) -> PhononDoc:
    """Forces -> force constants -> PhononDoc (a failed one on error)."""
    try:
        if isinstance(res, BaseException):
            raise res
        n_sc = ph_core.n_displacements(phonon.dataset)
        if len(res) != n_sc:
            raise CalculationError(f"{len(res)} force results for {n_sc} displaced supercells", material_id=mid,
                                   stage="phonon")
        ph_core.set_forces(phonon, [r.forces if hasattr(r, "forces") else r for r in res], material_id=mid)
        method = ph_core.produce_force_constants(phonon, settings.get("fc_method"), material_id=mid)
        return phonon_doc_from_phonopy(
            phonon, structure, info, settings, material_id=mid, fc_method=method,
            displacement=settings["displacement"], store_force_constants=store_force_constants,
            store_phonopy_yaml=store_phonopy_yaml,
        )
    except PhononFlowsError as exc:
        return failed_phonon_doc(structure, info, [str(exc.with_material(mid, "phonon"))], settings, mid, smat)


# ---- worker side of the pipeline (top-level functions: they run in spawned processes) --------
def _worker_prepare(structure: Structure, smat: Any, settings: dict, mid: str):
    try:
        phonon, smat, supercells = ph_core.prepare_displacements(structure, smat, settings, mid, None)
    except PhononFlowsError as exc:
        return "error", str(exc.with_material(mid, "phonon")), smat
    return "ok", phonon, np.asarray(smat).astype(int).tolist(), supercells


def _noop() -> int:
    return os.getpid()


@contextmanager
def _single_threaded_children():
    """Environment under which the worker processes start: one OpenMP/BLAS thread each."""
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _engine_threads(engine: Any, workers: int):
    """On CPU, leave ``workers`` cores to the phonopy workers while the engine runs."""
    device = str(getattr(engine, "device", "cpu"))
    if not device.startswith("cpu"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(before, cpus - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _phonons_pipelined(structures, engine, settings, smats, ids, store_force_constants, store_phonopy_yaml,
                       workers: int) -> list[PhononDoc]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    info = engine.info
    n = len(structures)
    docs: list[PhononDoc | None] = [None] * n
    with _single_threaded_children():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        # start the workers now, under the single-thread environment
        for f in [pool.submit(_noop) for _ in range(workers)]:
            f.result()
    try:
        pending = {pool.submit(_worker_prepare, s, None if m is None else np.asarray(m).tolist(), settings, mid): i
                   for i, (s, m, mid) in enumerate(zip(structures, smats, ids, strict=True))}
        finishing = {}
        prepared: dict[int, tuple] = {}
        with _engine_threads(engine, workers):
            while pending or prepared:
                if pending:
                    done, _ = wait(list(pending), return_when=FIRST_COMPLETED, timeout=None if not prepared else 0)
                    for f in done:
                        i = pending.pop(f)
                        out = f.result()
                        if out[0] == "error":
                            docs[i] = failed_phonon_doc(structures[i], info, [out[1]], settings, ids[i], out[2])
                        else:
                            prepared[i] = out[1:]
                if not prepared:
                    continue
                # forces for every material prepared so far, in one shared set of batches
                batch = sorted(prepared)
                results = compute_grouped(engine, [prepared[i][2] for i in batch], [ids[i] for i in batch])
                for i, res in zip(batch, results, strict=True):
                    phonon, smat, _sc = prepared.pop(i)
                    if isinstance(res, BaseException):  # no phonopy work left: the failed doc is made here
                        docs[i] = _finish(phonon, smat, res, structures[i], info, settings, ids[i],
                                          store_force_constants, store_phonopy_yaml)
                        continue
                    forces = [np.asarray(r.forces) for r in res]
                    finishing[pool.submit(_finish, phonon, smat, forces, structures[i], info, settings, ids[i],
                                          store_force_constants, store_phonopy_yaml)] = i
        for f, i in finishing.items():
            docs[i] = f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return docs  # type: ignore[return-value]


@job(data=list(PHONON_DATA_FIELDS))
def batched_engine_phonons(
    structures: list[Structure],
    engine: str,
    engine_kwargs: dict | None = None,
    settings: dict | None = None,
    supercell_matrices: list | None = None,
    material_ids: list[str | None] | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
    postprocess_workers: int = 0,
) -> list[PhononDoc]:
    """Job: phonons of several materials with one force engine built (one model load) in the job."""
    settings = settings or phonon_settings()
    kwargs = dict(engine_kwargs or {})
    structures = [as_pymatgen_structure(s) for s in structures]
    ids = list(material_ids) if material_ids is not None else [None] * len(structures)
    kwargs = with_job_store(engine, kwargs)
    try:
        eng = engines.get_engine(engine, **kwargs)
    except Exception as exc:  # noqa: BLE001 - no engine: every material of the pack fails, saying why
        info = guess_engine_info(engine, kwargs)
        reason = f"cannot build force engine {engine!r}: {type(exc).__name__}: {exc}"
        return [
            failed_phonon_doc(s, info, [f"{material_name(s, m)}: phonon: {reason}"], settings, material_name(s, m))
            for s, m in zip(structures, ids, strict=True)
        ]
    return phonons_for_many(structures, eng, settings, supercell_matrices, ids, store_force_constants,
                            store_phonopy_yaml, postprocess_workers)


@dataclass
class BatchedPhononMaker(PhononMaker):
    """Structures + force engine -> list of PhononDocs, in one job with one model load.

    Same parameters as :class:`~phonon_flows.makers.phonons.PhononMaker` (``force_maker`` is not
    used: a pack of materials only makes sense with a force engine), plus
    ``postprocess_workers``: processes that run phonopy's work while the engine computes forces
    (0: all in the job's process; see :func:`phonons_for_many`).
    """

    name: str = "batched phonons"
    postprocess_workers: int = 0

    def make(  # type: ignore[override]
        self,
        structures: Sequence[Structure],
        material_ids: Sequence[str | None] | None = None,
        supercell_matrices: Sequence[Any] | None = None,
    ):
        if self.force_maker is not None:
            raise InputError("BatchedPhononMaker runs a force engine; use PhononMaker with a force_maker instead")
        structures = list(structures)
        if material_ids is not None and len(material_ids) != len(structures):
            raise InputError(f"{len(structures)} structures but {len(material_ids)} material ids")
        if supercell_matrices is not None:
            if len(supercell_matrices) != len(structures):
                raise InputError(f"{len(structures)} structures but {len(supercell_matrices)} supercell matrices")
            supercell_matrices = [None if m is None else np.asarray(m).tolist() for m in supercell_matrices]
        j = batched_engine_phonons(
            structures, self.engine, dict(self.engine_kwargs), self.settings(), supercell_matrices,
            None if material_ids is None else list(material_ids), self.store_force_constants, self.store_phonopy_yaml,
            self.postprocess_workers,
        )
        j.name = f"{self.name} {self.engine} ({len(structures)} materials)"
        j.config.expose_store = True
        return set_category(j, engine_category(self.engine))
