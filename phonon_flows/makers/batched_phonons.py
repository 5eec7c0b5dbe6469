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
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from jobflow import CURRENT_JOB, job
from monty.json import jsanitize
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
    member_spread,
    phonon_doc_from_phonopy,
    phonon_settings,
    with_job_store,
)
from phonon_flows.schemas.batch import PACK_PROGRESS, PhononBatchDoc, PhononBatchTimings
from phonon_flows.schemas.common import MaterialError
from phonon_flows.schemas.phonon import PHONON_DATA_FIELDS, PhononDoc
from phonon_flows.store import remove_orphan_blobs

logger = logging.getLogger(__name__)


def _log_done(doc: PhononDoc, n_supercells: int, seconds: float, k: int, n: int) -> None:
    """One log line per finished material of a pack (INFO; a failure is also logged as an error
    where its PhononDoc is made)."""
    logger.info("phonons of %s %s: %d displaced supercells, %.1f s (%d/%d materials of the pack)",
                doc.material_id, "failed" if doc.failed else "done", n_supercells, seconds, k, n,
                extra={PACK_PROGRESS: {"k": k, "n": n, "material_id": doc.material_id, "failed": bool(doc.failed),
                                       "n_supercells": n_supercells, "seconds": seconds}})


def _force_shares(seconds: float, groups: Sequence[Sequence[Any]]) -> list[float]:
    """The wall time of one shared force call split over its materials by their atoms."""
    atoms = [sum(len(a) for a in g) for g in groups]
    total = sum(atoms)
    return [seconds * a / total if total else 0.0 for a in atoms]


def phonons_for_many(
    structures: Sequence[Structure],
    engine: Any,
    settings: dict | None = None,
    supercell_matrices: Sequence[Any] | None = None,
    material_ids: Sequence[str | None] | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
    postprocess_workers: int = 0,
    timings: dict[str, float] | None = None,
    progress: tuple[int, int] | None = None,
) -> list[PhononDoc]:
    """PhononDocs of several materials with one loaded :class:`~phonon_flows.engines.base.ForceEngine`.

    ``supercell_matrices``: one per structure (None entries: chosen as PhononMaker does).

    ``postprocess_workers``: 0 runs everything in this process, one material after the other.
    With N > 0, phonopy's work (symmetry and displacements before the forces; force constants,
    mesh, DOS, bands and the document after) runs in N worker processes while this process runs
    the engine, so the model is never idle waiting for phonopy and phonopy's (mostly
    single-threaded) work spreads over the CPU cores. On CPU the engine then keeps
    ``cpus - N`` torch threads. Same numbers either way.

    ``timings``: when given, ``prepare_s`` and ``finish_s`` (phonopy's work before and after the
    forces, serial path only) are added to it.

    Each finished material logs one INFO line (material id, displaced supercells, seconds: its
    phonopy work and its share of the shared force calls, k of n); ``progress``: (materials of
    the pack done before this call, materials in the pack), default (0, number of structures).
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
                                      store_phonopy_yaml, int(postprocess_workers), progress)

    info = engine.info
    timings = timings if timings is not None else {}
    k, n_pack = progress if progress is not None else (0, n)
    docs: list[PhononDoc | None] = [None] * n
    prepared: dict[int, tuple] = {}
    own_s = [0.0] * n  # each material's own seconds: its phonopy work and its share of the forces
    t0 = time.perf_counter()
    for i, (s, smat, mid) in enumerate(zip(structures, smats, ids, strict=True)):
        t1 = time.perf_counter()
        try:
            prepared[i] = _prepare(s, smat, settings, mid)
        except PhononFlowsError as exc:
            docs[i] = failed_phonon_doc(s, info, [str(exc.with_material(mid, "phonon"))], settings, mid, smat)
            k += 1
            _log_done(docs[i], 0, time.perf_counter() - t1, k, n_pack)
        own_s[i] = time.perf_counter() - t1

    timings["prepare_s"] = timings.get("prepare_s", 0.0) + time.perf_counter() - t0
    order = sorted(prepared)
    results = _shared_forces(engine, [prepared[i][2] for i in order], order, ids, own_s, k, n_pack)
    t0 = time.perf_counter()
    for i, res in zip(order, results, strict=True):
        t1 = time.perf_counter()
        phonon, smat, supercells = prepared.pop(i)  # let each material's phonopy objects go once done
        docs[i] = _finish(phonon, smat, res, structures[i], info, settings, ids[i], store_force_constants,
                          store_phonopy_yaml)
        k += 1
        _log_done(docs[i], len(supercells), own_s[i] + time.perf_counter() - t1, k, n_pack)
    timings["finish_s"] = timings.get("finish_s", 0.0) + time.perf_counter() - t0
    return docs  # type: ignore[return-value]


def _shared_forces(engine, groups, order, ids, own_s, k, n_pack):
    """The forces of several materials' displaced supercells in one shared set of batches (a progress
    line first); each material's share of the time is added to ``own_s``."""
    if groups:
        logger.info("phonons: forces of %d displaced supercells of %d materials (%d/%d of the pack done)",
                    sum(len(g) for g in groups), len(groups), k, n_pack)
    t0 = time.perf_counter()
    results = compute_grouped(engine, groups, [ids[i] for i in order])
    for i, share in zip(order, _force_shares(time.perf_counter() - t0, groups), strict=True):
        own_s[i] += share
    return results


def _prepare(structure: Structure, smat: Any, settings: dict, mid: str) -> tuple[Any, Any, list]:
    """Phonopy, supercell matrix, and the supercells the engine computes: the displaced ones, then
    the undisplaced one where its forces are to be subtracted (:func:`_finish` takes them off)."""
    phonon, smat, supercells = ph_core.prepare_displacements(structure, smat, settings, mid, None)
    residual = ph_core.residual_supercell(phonon, settings)
    return phonon, smat, supercells if residual is None else [*supercells, residual]


def _finish(phonon, smat, res, structure, info, settings, mid, store_force_constants, store_phonopy_yaml) -> PhononDoc:
    """Forces -> force constants -> PhononDoc (a failed one on error)."""
    try:
        if isinstance(res, BaseException):
            raise res
        n_sc = ph_core.n_displacements(phonon.dataset)
        with_residual = ph_core.residual_supercell(phonon, settings) is not None  # the last result
        if len(res) != n_sc + with_residual:
            raise CalculationError(f"{len(res)} force results for {n_sc} displaced supercells"
                                   + (" and the undisplaced one" if with_residual else ""), material_id=mid,
                                   stage="phonon")
        arrays = [r.forces if hasattr(r, "forces") else r for r in res]
        forces, f0_max = ph_core.subtract_residual_forces(arrays[:n_sc], arrays[n_sc] if with_residual else None,
                                                          material_id=mid)
        ph_core.set_forces(phonon, forces, material_id=mid)
        spread = member_spread(phonon, res, n_sc, with_residual, settings, mid)
        method = ph_core.produce_force_constants(phonon, settings.get("fc_method"), material_id=mid)
        return phonon_doc_from_phonopy(
            phonon, structure, info, settings, material_id=mid, fc_method=method,
            displacement=settings["displacement"], store_force_constants=store_force_constants,
            store_phonopy_yaml=store_phonopy_yaml, residual_force=f0_max, committee_spread=spread,
        )
    except PhononFlowsError as exc:
        return failed_phonon_doc(structure, info, [str(exc.with_material(mid, "phonon"))], settings, mid, smat)


# ---- worker side of the pipeline (top-level functions: they run in spawned processes) --------
def _worker_prepare(structure: Structure, smat: Any, settings: dict, mid: str):
    """(``"ok"``, phonon, supercell matrix, displaced supercells, seconds) or (``"error"``,
    reason, supercell matrix, seconds)."""
    t0 = time.perf_counter()
    try:
        phonon, smat, supercells = _prepare(structure, smat, settings, mid)
    except PhononFlowsError as exc:
        return "error", str(exc.with_material(mid, "phonon")), smat, time.perf_counter() - t0
    return "ok", phonon, np.asarray(smat).astype(int).tolist(), supercells, time.perf_counter() - t0


def _worker_finish(*args: Any) -> tuple[PhononDoc, float]:
    """:func:`_finish` in a worker, with its seconds."""
    t0 = time.perf_counter()
    doc = _finish(*args)
    return doc, time.perf_counter() - t0


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
                       workers: int, progress: tuple[int, int] | None = None) -> list[PhononDoc]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    info = engine.info
    n = len(structures)
    k, n_pack = progress if progress is not None else (0, n)
    docs: list[PhononDoc | None] = [None] * n
    own_s = [0.0] * n  # each material's own seconds: its phonopy work and its share of the forces
    n_sc = [0] * n

    def done(i: int, doc: PhononDoc, seconds: float) -> None:
        nonlocal k
        docs[i] = doc
        own_s[i] += seconds
        k += 1
        _log_done(doc, n_sc[i], own_s[i], k, n_pack)

    with _single_threaded_children():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        # start the workers now, under the single-thread environment
        for f in [pool.submit(_noop) for _ in range(workers)]:
            f.result()
    try:
        pending = {pool.submit(_worker_prepare, s, None if m is None else np.asarray(m).tolist(), settings, mid): i
                   for i, (s, m, mid) in enumerate(zip(structures, smats, ids, strict=True))}
        finishing: dict[Any, int] = {}
        prepared: dict[int, tuple] = {}

        def collect(block: bool) -> None:
            """Log and keep the documents the workers have finished (all of them when ``block``)."""
            ready, _ = wait(list(finishing), return_when="ALL_COMPLETED" if block else FIRST_COMPLETED,
                            timeout=None if block else 0)
            for f in ready:
                i = finishing.pop(f)
                doc, seconds = f.result()
                done(i, doc, seconds)

        with _engine_threads(engine, workers):
            while pending or prepared:
                if pending:
                    ready, _ = wait(list(pending), return_when=FIRST_COMPLETED, timeout=None if not prepared else 0)
                    for f in ready:
                        i = pending.pop(f)
                        out = f.result()
                        own_s[i] += out[-1]
                        if out[0] == "error":
                            done(i, failed_phonon_doc(structures[i], info, [out[1]], settings, ids[i], out[2]), 0.0)
                        else:
                            prepared[i] = out[1:4]
                            n_sc[i] = len(out[3])
                collect(block=False)
                if not prepared:
                    continue
                # forces for every material prepared so far, in one shared set of batches
                batch = sorted(prepared)
                results = _shared_forces(engine, [prepared[i][2] for i in batch], batch, ids, own_s, k, n_pack)
                for i, res in zip(batch, results, strict=True):
                    phonon, smat, _sc = prepared.pop(i)
                    if isinstance(res, BaseException):  # no phonopy work left: the failed doc is made here
                        t0 = time.perf_counter()
                        doc = _finish(phonon, smat, res, structures[i], info, settings, ids[i],
                                      store_force_constants, store_phonopy_yaml)
                        done(i, doc, time.perf_counter() - t0)
                        continue
                    finishing[pool.submit(_worker_finish, phonon, smat, res, structures[i], info, settings, ids[i],
                                          store_force_constants, store_phonopy_yaml)] = i
        collect(block=True)
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

class TimedEngine:
    """A force engine that adds the wall time of its ``compute`` calls to ``seconds`` (and counts
    the structures and atoms); everything else is the wrapped engine's."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.seconds = 0.0
        self.n_structures = 0
        self.n_atoms = 0

    def compute(self, structures, *args: Any, **kwargs: Any):
        t0 = time.perf_counter()
        try:
            return self.engine.compute(structures, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.n_structures += len(structures)
            self.n_atoms += sum(len(a) for a in structures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def _stored_ok(store: Any, uuids: Sequence[str]) -> set[str]:
    """The uuids among ``uuids`` whose PhononDoc is in ``store`` and does not say it failed."""
    if store is None or not uuids:
        return set()
    found = store.docs_store.query({"uuid": {"$in": list(uuids)}, "output.failed": {"$ne": True}},
                                   properties=["uuid", "output.material_id"])
    return {d["uuid"] for d in found if d.get("output")}


def write_phonon_docs(store: Any, docs: Sequence[PhononDoc], uuids: Sequence[str], metadata: Sequence[dict],
                      names: Sequence[str], hosts: Sequence[str] = ()) -> None:
    """Write PhononDocs to ``store`` (a JobStore) in ONE update: each as a document of the output
    collection of its own (``uuid``, index 1, the job metadata given), its large fields routed to
    the ``data`` store as jobflow routes a PhononMaker job's output."""
    from datetime import datetime

    now = datetime.now().isoformat()
    records = [
        {"uuid": u, "index": 1, "output": jsanitize(d, strict=True, enum_values=True, allow_bson=True),
         "completed_at": now, "metadata": m, "hosts": list(hosts), "name": name}
        for d, u, m, name in zip(docs, uuids, metadata, names, strict=True)
    ]
    if records:
        save = {"data": list(PHONON_DATA_FIELDS)} if "data" in store.additional_stores else {}
        store.update(records, key=["uuid", "index"], save=save)


@job
def batched_phonon_documents(
    structures: list[Structure | None],
    material_ids: list[str],
    doc_uuids: list[str],
    doc_metadata: list[dict],
    engine: str,
    engine_kwargs: dict | None = None,
    settings: dict | None = None,
    supercell_matrices: list | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
    postprocess_workers: int = 0,
    chunk_materials: int = 8,
    doc_names: list[str] | None = None,
    input_structures: list[Structure] | None = None,
) -> PhononBatchDoc:
    """Job: phonons of a pack of materials with ONE model load; each material's PhononDoc is
    written to the job's store as a document of its own (uuid ``doc_uuids[i]``, metadata
    ``doc_metadata[i]``), so that queries see one PhononDoc per material.

    Materials whose PhononDoc is already stored and not failed are not recomputed (a rerun of
    the job finishes only what is missing or failed). A material that fails (bad structure, an
    element the model does not know, NaN forces, no structure because its relaxation failed)
    gets a failed PhononDoc naming it and the reason; the others carry on. The documents are
    written every ``chunk_materials`` materials (one store update each), so a job killed half
    way keeps what it computed. ``input_structures``: the unrelaxed inputs, used for the failed
    document of a material whose ``structures`` entry is None.
    """
    t_start = time.perf_counter()
    settings = settings or phonon_settings()
    n = len(material_ids)
    if not (len(structures) == len(doc_uuids) == len(doc_metadata) == n):
        raise InputError(f"a pack of {n} materials needs as many structures, uuids and metadata")
    names = list(doc_names) if doc_names is not None else [f"phonons {engine} {m}" for m in material_ids]
    smats = list(supercell_matrices) if supercell_matrices is not None else [None] * n
    store = getattr(CURRENT_JOB, "store", None)
    if store is None:
        raise PhononFlowsError("batched_phonon_documents writes to the job's store: run it with expose_store=True")
    hosts = list(getattr(getattr(CURRENT_JOB, "job", None), "hosts", None) or [])
    timings = PhononBatchTimings()
    remove_orphan_blobs(store, doc_uuids)  # data a killed run of this pack wrote without its document
    done_before = _stored_ok(store, doc_uuids)
    todo = [i for i in range(n) if doc_uuids[i] not in done_before]
    failures: dict[int, str] = {}

    def failed_doc(i: int, reason: str) -> PhononDoc:
        failures[i] = reason
        s = structures[i] if structures[i] is not None else (input_structures[i] if input_structures else None)
        return failed_phonon_doc(s, info, [reason], settings, material_ids[i], smats[i])

    kwargs = with_job_store(engine, dict(engine_kwargs or {}))
    info = guess_engine_info(engine, kwargs)
    eng: TimedEngine | None = None
    t0 = time.perf_counter()
    if todo:
        try:
            eng = TimedEngine(engines.get_engine(engine, **kwargs))
            info = eng.info
        except Exception as exc:  # noqa: BLE001 - no engine: every material of the pack fails, saying why
            eng = None
            engine_error = f"cannot build force engine {engine!r}: {type(exc).__name__}: {exc}"
    timings.model_load_s = time.perf_counter() - t0

    logger.info("phonons: pack of %d materials, %d already stored, %d to compute", n, len(done_before), len(todo))
    step = max(1, int(chunk_materials))
    for start in range(0, len(todo), step):
        chunk = todo[start:start + step]
        docs: dict[int, PhononDoc] = {}
        runnable = []
        k = start  # materials of the pack done so far
        for i in chunk:
            if eng is None:
                docs[i] = failed_doc(i, f"{material_ids[i]}: phonon: {engine_error}")
            elif structures[i] is None:
                docs[i] = failed_doc(i, f"{material_ids[i]}: phonon: no structure to compute (the job that "
                                        "makes it, e.g. its relaxation, failed)")
            else:
                runnable.append(i)
                continue
            k += 1
            _log_done(docs[i], 0, 0.0, k, len(todo))
        if runnable:
            steps: dict[str, float] = {}
            out = phonons_for_many([structures[i] for i in runnable], eng, settings, [smats[i] for i in runnable],
                                   [material_ids[i] for i in runnable], store_force_constants, store_phonopy_yaml,
                                   postprocess_workers, timings=steps, progress=(k, len(todo)))
            timings.prepare_s += steps.get("prepare_s", 0.0)
            timings.finish_s += steps.get("finish_s", 0.0)
            for i, doc in zip(runnable, out, strict=True):
                docs[i] = doc
                if doc.failed:
                    failures[i] = "; ".join(doc.errors) or "failed"
        t0 = time.perf_counter()
        write_phonon_docs(store, [docs[i] for i in chunk], [doc_uuids[i] for i in chunk],
                          [doc_metadata[i] for i in chunk], [names[i] for i in chunk], hosts)
        timings.store_write_s += time.perf_counter() - t0
        logger.info("phonons: %d/%d materials of the pack done and stored (%d failed)", start + len(chunk),
                    len(todo), len(failures))

    timings.forces_s = eng.seconds if eng is not None else 0.0
    timings.total_s = time.perf_counter() - t_start
    failed = [MaterialError(material_id=material_ids[i], stage="phonon", reason=failures[i]) for i in sorted(failures)]
    return PhononBatchDoc(
        material_ids=list(material_ids), doc_uuids=list(doc_uuids), n_computed=len(todo) - len(failed),
        n_reused=len(done_before), n_failed=len(failed), failed_materials=failed, failed=bool(failed),
        error=(f"{len(failed)} of {n} materials failed: " + ", ".join(e.material_id for e in failed)) if failed else None,
        n_supercells=eng.n_structures if eng is not None else 0, n_atoms=eng.n_atoms if eng is not None else 0,
        timings=timings,
    )


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

    def make_documents(
        self,
        structures: Sequence[Any],
        material_ids: Sequence[str],
        doc_uuids: Sequence[str],
        doc_metadata: Sequence[dict],
        supercell_matrices: Sequence[Any] | None = None,
        doc_names: Sequence[str] | None = None,
        input_structures: Sequence[Structure] | None = None,
        chunk_materials: int = 8,
    ):
        """The job that computes a pack of materials and writes one PhononDoc per material to
        the job store (see :func:`batched_phonon_documents`); its output is a PhononBatchDoc.
        ``structures`` may hold references to other jobs' structures (e.g. relaxations)."""
        if self.force_maker is not None:
            raise InputError("BatchedPhononMaker runs a force engine; use PhononMaker with a force_maker instead")
        n = len(structures)
        for name, seq in (("material ids", material_ids), ("doc uuids", doc_uuids), ("doc metadata", doc_metadata),
                          ("supercell matrices", supercell_matrices), ("doc names", doc_names),
                          ("input structures", input_structures)):
            if seq is not None and len(seq) != n:
                raise InputError(f"{n} structures but {len(seq)} {name}")
        smats = None if supercell_matrices is None else [
            None if m is None else np.asarray(m).astype(int).tolist() for m in supercell_matrices]
        j = batched_phonon_documents(
            list(structures), list(material_ids), list(doc_uuids), [dict(m) for m in doc_metadata], self.engine,
            dict(self.engine_kwargs), self.settings(), smats, self.store_force_constants, self.store_phonopy_yaml,
            self.postprocess_workers, chunk_materials, None if doc_names is None else list(doc_names),
            None if input_structures is None else list(input_structures),
        )
        j.name = f"{self.name} {self.engine} ({n} materials)"
        j.config.expose_store = True
        return set_category(j, engine_category(self.engine))
