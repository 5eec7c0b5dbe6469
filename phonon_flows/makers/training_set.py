"""TrainingSetMaker: ForceDocs of many materials -> TrainingSetDoc (extxyz for mace_run_train +
the statistics of the paper's Fig. 2).

The collecting job runs even when some parents failed (``on_missing_references = NONE``): a
failed parent's output arrives as ``None``; the material it belongs to is left out and recorded
in ``failed`` with the stage that failed, and the other materials go on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobflow import Maker, job
from jobflow.core.job import JobConfig
from jobflow.core.reference import OnMissing
from pymatgen.core import Structure

from phonon_flows.core.training_set import (
    CONFIG_TYPE,
    ENERGY_KEY,
    FORCES_KEY,
    N_BINS,
    STRESS_KEY,
    labelled_atoms,
    training_set_statistics,
    write_extxyz,
)
from phonon_flows.errors import InputError
from phonon_flows.schemas.common import EngineInfo, MaterialError
from phonon_flows.schemas.forces import FailedCalculation, ForceDoc
from phonon_flows.schemas.training_set import TRAINING_SET_DATA_FIELDS, TrainingSetDoc, TrainingSetStatistics

logger = logging.getLogger(__name__)

STAGES = ("input", "relax", "perturb", "label")


def _failure_reason(obj: Any) -> str | None:
    """The reason of a FailedCalculation (object or dict), None for anything else."""
    if isinstance(obj, FailedCalculation):
        return obj.reason
    if isinstance(obj, Mapping) and obj.get("failed") is True and "reason" in obj:
        return str(obj["reason"])
    return None


def _as_force_doc(obj: Any) -> ForceDoc | None:
    if obj is None or isinstance(obj, ForceDoc) or _failure_reason(obj) is not None:
        return None if not isinstance(obj, ForceDoc) else obj
    if isinstance(obj, Mapping):
        data = {k: v for k, v in obj.items() if not k.startswith("@")}
        if isinstance(data.get("structure"), Mapping):
            data["structure"] = Structure.from_dict(data["structure"])
        return ForceDoc.model_validate(data)
    raise TypeError(f"expected a ForceDoc, got {type(obj).__name__}")


def _flatten(entry: Any) -> list[Any]:
    if isinstance(entry, (list, tuple)):
        out: list[Any] = []
        for e in entry:
            out.extend(_flatten(e))
        return out
    return [entry]


def _as_error(obj: Any) -> MaterialError:
    return obj if isinstance(obj, MaterialError) else MaterialError.model_validate(
        {k: v for k, v in dict(obj).items() if not str(k).startswith("@")}
    )


#: INCAR tags that follow the structure (one value per atom, per electron count...), not the engine
STRUCTURE_INCAR_TAGS = frozenset({"MAGMOM", "NBANDS", "NELECT", "NUPDOWN", "LDAUL", "LDAUU", "LDAUJ", "SYSTEM"})


def engine_identity(e: EngineInfo) -> EngineInfo:
    """The engine without what belongs to one calculation: the job folder (``provenance``) and
    the INCAR tags that follow the structure. Every VASP single point with the same settings and
    version is then one engine."""
    settings = dict(e.settings)
    if isinstance(settings.get("incar"), dict):
        settings["incar"] = {k: v for k, v in settings["incar"].items() if k.upper() not in STRUCTURE_INCAR_TAGS}
    return e.model_copy(update={"provenance": None, "settings": settings})


def _engine_key(e: EngineInfo) -> str:
    return engine_identity(e).model_dump_json()


@dataclass
class TrainingSetMaker(Maker):
    """Collect ForceDocs into a MACE training set.

    ``keep_partial``: keep the labelled structures of a material some of whose labelling jobs
    failed (default False: the material is left out and recorded).
    """

    name: str = "training set"
    energy_key: str = ENERGY_KEY
    forces_key: str = FORCES_KEY
    stress_key: str = STRESS_KEY
    config_type: str = CONFIG_TYPE
    n_bins: int = N_BINS
    keep_partial: bool = False

    @job(
        data=list(TRAINING_SET_DATA_FIELDS),
        output_schema=TrainingSetDoc,
        config=JobConfig(on_missing_references=OnMissing.NONE),
    )
    def make(
        self,
        force_docs: Sequence[Any],
        material_ids: Sequence[str] | None = None,
        failed: Sequence[MaterialError] | None = None,
        checkpoints: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> TrainingSetDoc:
        """``force_docs``: ForceDocs, lists of ForceDocs, or None (failed job) per entry;
        ``material_ids``: the material of each entry (needed to name a None entry);
        ``failed``: materials already known to have failed (e.g. bad input);
        ``checkpoints``: per material, ``{stage: output or None}`` in flow order, to tell which
        stage of a failed material failed (the first None)."""
        return self.collect(force_docs, material_ids, failed, checkpoints)

    def collect(self, force_docs, material_ids=None, failed=None, checkpoints=None) -> TrainingSetDoc:
        """The work of :meth:`make`, without jobflow."""
        entries = list(force_docs or [])
        if material_ids is not None and len(material_ids) != len(entries):
            raise InputError(f"{len(material_ids)} material ids for {len(entries)} entries", stage="train-set")
        failures: dict[str, MaterialError] = {}
        for err in failed or []:
            err = _as_error(err)
            failures.setdefault(err.material_id, err)

        per_material, missing, expected, order, causes = _group_by_material(entries, material_ids)
        for mid in order:
            if mid in failures:
                per_material.pop(mid, None)
                continue
            n_missing = missing.get(mid, 0)
            if n_missing == 0:
                continue
            stage = self._failed_stage(mid, checkpoints)
            if causes.get(mid):
                reason = (f"{n_missing} of {expected[mid]} labelling output(s) missing: "
                          + "; ".join(dict.fromkeys(causes[mid])))
            else:
                reason = (
                    f"{n_missing} of {expected[mid]} labelling output(s) missing: the {stage} stage of this material "
                    "failed (see the job's log)"
                )
            if self.keep_partial and per_material.get(mid):
                logger.warning("%s: %s; keeping the other %d", mid, reason, len(per_material[mid]))
                failures[mid] = MaterialError(material_id=mid, stage=stage, reason=reason + " (partial set kept)")
                continue
            failures[mid] = MaterialError(material_id=mid, stage=stage, reason=reason)
            per_material.pop(mid, None)

        atoms_list = []
        engines: dict[str, EngineInfo] = {}
        for mid in order:
            for doc in sorted(per_material.get(mid, []), key=lambda d: (d.perturbation_index is None, d.perturbation_index or 0)):
                engines.setdefault(_engine_key(doc.engine), engine_identity(doc.engine))
                atoms_list.append(
                    labelled_atoms(
                        doc.structure, doc.energy, doc.forces, doc.stress, material_id=mid, config_type=self.config_type,
                        energy_key=self.energy_key, forces_key=self.forces_key, stress_key=self.stress_key,
                        extra_info={"engine": doc.engine.name}
                        | ({} if doc.perturbation_index is None else {"perturbation_index": doc.perturbation_index}),
                    )
                )
        xyz = write_extxyz(atoms_list)
        stats = training_set_statistics(atoms_list, self.energy_key, self.forces_key, self.n_bins)
        included = [mid for mid in order if per_material.get(mid)]
        for mid, err in failures.items():
            logger.warning("training set: left out %s (%s): %s", mid, err.stage, err.reason)
        return TrainingSetDoc(
            material_ids=included,
            n_structures=len(atoms_list),
            n_atoms=stats["n_atoms"],
            elements=sorted(stats["element_atom_counts"]),
            energy_key=self.energy_key,
            forces_key=self.forces_key,
            stress_key=self.stress_key,
            config_type=self.config_type,
            xyz=xyz,
            xyz_sha256=hashlib.sha256(xyz.encode()).hexdigest(),
            statistics=TrainingSetStatistics.model_validate(stats),
            engines=list(engines.values()),
            structures_per_material={mid: len(per_material[mid]) for mid in included},
            failed=list(failures.values()),
        )

    @staticmethod
    def _failed_stage(material_id: str, checkpoints: Mapping[str, Mapping[str, Any]] | None) -> str:
        stages = (checkpoints or {}).get(material_id) or {}
        for stage, value in stages.items():
            if value is None:
                return stage
        return "label"


def _group_by_material(entries: list, material_ids: Sequence[str] | None):
    """``(ForceDocs per material, missing outputs per material, expected outputs per material,
    materials in entry order)`` of the labelling outputs (a None entry is a failed job)."""
    per_material: dict[str, list[ForceDoc]] = {}
    missing: dict[str, int] = {}
    causes: dict[str, list[str]] = {}
    expected: dict[str, int] = {}
    order: list[str] = []
    for i, entry in enumerate(entries):
        docs = _flatten(entry)
        mid = material_ids[i] if material_ids is not None else None
        for raw in docs:
            doc = _as_force_doc(raw)
            key = mid or (doc.material_id if doc is not None else f"entry-{i}")
            if key not in expected:
                order.append(key)
            expected[key] = expected.get(key, 0) + 1
            if doc is None:
                missing[key] = missing.get(key, 0) + 1
                reason = _failure_reason(raw)
                if reason:
                    causes.setdefault(key, []).append(reason)
            else:
                per_material.setdefault(key, []).append(doc)
    return per_material, missing, expected, order, causes
