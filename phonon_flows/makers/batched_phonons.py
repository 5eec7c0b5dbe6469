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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jobflow import CURRENT_JOB, job
from pymatgen.core import Structure

from phonon_flows.core import phonons as ph_core
from phonon_flows.errors import CalculationError, InputError, PhononFlowsError
from phonon_flows.makers.phonons import (
    PhononMaker,
    _as_structure,
    _engine_info_guess,
    _material_id,
    _prepare,
    failed_phonon_doc,
    phonon_doc_from_phonopy,
    phonon_settings,
)
from phonon_flows.schemas.phonon import PHONON_DATA_FIELDS, PhononDoc


def phonons_for_many(
    structures: Sequence[Structure],
    engine: Any,
    settings: dict | None = None,
    supercell_matrices: Sequence[Any] | None = None,
    material_ids: Sequence[str | None] | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
) -> list[PhononDoc]:
    """PhononDocs of several materials with one loaded :class:`~phonon_flows.engines.base.ForceEngine`.

    ``supercell_matrices``: one per structure (None entries: chosen as PhononMaker does).
    """
    from phonon_flows.engines.batching import compute_grouped

    settings = settings or phonon_settings()
    structures = [_as_structure(s) for s in structures]
    n = len(structures)
    smats = list(supercell_matrices) if supercell_matrices is not None else [None] * n
    ids_in = list(material_ids) if material_ids is not None else [None] * n
    if len(smats) != n or len(ids_in) != n:
        raise InputError(f"{n} structures, {len(smats)} supercell matrices and {len(ids_in)} material ids")
    ids = [_material_id(s, m) for s, m in zip(structures, ids_in, strict=True)]
    info = engine.info

    docs: list[PhononDoc | None] = [None] * n
    prepared: dict[int, tuple] = {}
    for i, (s, smat, mid) in enumerate(zip(structures, smats, ids, strict=True)):
        try:
            prepared[i] = _prepare(s, smat, settings, mid, None)
        except PhononFlowsError as exc:
            docs[i] = failed_phonon_doc(s, info, [str(exc.with_material(mid, "phonon"))], settings, mid, smat)

    order = sorted(prepared)
    results = compute_grouped(engine, [prepared[i][2] for i in order], [ids[i] for i in order])
    for i, res in zip(order, results, strict=True):
        phonon, smat, supercells = prepared[i]
        mid = ids[i]
        try:
            if isinstance(res, PhononFlowsError):
                raise res
            if len(res) != len(supercells):
                raise CalculationError(f"{len(res)} force results for {len(supercells)} displaced supercells",
                                       material_id=mid, stage="phonon")
            ph_core.set_forces(phonon, [r.forces for r in res], material_id=mid)
            method = ph_core.produce_force_constants(phonon, settings.get("fc_method"), material_id=mid)
            docs[i] = phonon_doc_from_phonopy(
                phonon, structures[i], info, settings, material_id=mid, fc_method=method,
                displacement=settings["displacement"], store_force_constants=store_force_constants,
                store_phonopy_yaml=store_phonopy_yaml,
            )
        except PhononFlowsError as exc:
            docs[i] = failed_phonon_doc(structures[i], info, [str(exc.with_material(mid, "phonon"))], settings, mid,
                                        smat)
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
) -> list[PhononDoc]:
    """Job: phonons of several materials with one force engine built (one model load) in the job."""
    from phonon_flows.engines import MLIP_ENGINES, get_engine

    settings = settings or phonon_settings()
    kwargs = dict(engine_kwargs or {})
    structures = [_as_structure(s) for s in structures]
    ids = list(material_ids) if material_ids is not None else [None] * len(structures)
    if engine.lower() in MLIP_ENGINES and "model_path" not in kwargs and "store" not in kwargs:
        store = getattr(CURRENT_JOB, "store", None)
        if store is not None:
            kwargs["store"] = store
    try:
        eng = get_engine(engine, **kwargs)
    except Exception as exc:  # noqa: BLE001 - no engine: every material of the pack fails, saying why
        info = _engine_info_guess(engine, kwargs)
        reason = f"cannot build force engine {engine!r}: {type(exc).__name__}: {exc}"
        return [
            failed_phonon_doc(s, info, [f"{_material_id(s, m)}: phonon: {reason}"], settings, _material_id(s, m))
            for s, m in zip(structures, ids, strict=True)
        ]
    return phonons_for_many(structures, eng, settings, supercell_matrices, ids, store_force_constants,
                            store_phonopy_yaml)


@dataclass
class BatchedPhononMaker(PhononMaker):
    """Structures + force engine -> list of PhononDocs, in one job with one model load.

    Same parameters as :class:`~phonon_flows.makers.phonons.PhononMaker` (``force_maker`` is not
    used: a pack of materials only makes sense with a force engine).
    """

    name: str = "batched phonons"

    def make(  # type: ignore[override]
        self,
        structures: Sequence[Structure],
        material_ids: Sequence[str | None] | None = None,
        supercell_matrices: Sequence[Any] | None = None,
    ):
        from phonon_flows.engines import engine_category
        from phonon_flows.makers.base import set_category

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
        )
        j.name = f"{self.name} {self.engine} ({len(structures)} materials)"
        j.config.expose_store = True
        return set_category(j, engine_category(self.engine))
