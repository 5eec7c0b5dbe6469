"""End-to-end flow makers.

- :class:`TrainingDataMaker`: structures -> (relax) -> perturb -> label (reference engine or VASP)
  -> training set (TrainingSetDoc with the extxyz for MACE).
- ``TrainingCampaignMaker`` (training data -> MACE -> phonons -> benchmark) and ``ScreeningMaker``
  (new materials with a trained model) live further down this module.

A material whose input is bad (unreadable file, disordered, overlapping atoms, elements the
engine cannot handle, no supercell in the window) is recorded with the reason when the flow is
made and gets no jobs; a material whose job fails while the flow runs is recorded by the
collecting job (which runs with ``on_missing_references = NONE``). Neither stops the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobflow import Flow, Maker
from pymatgen.core import Structure

from phonon_flows.core.structures import (
    MIN_DISTANCE,
    check_elements,
    material_id_for,
    read_structure,
    unique_material_id,
    validate_structure,
)
from phonon_flows.core.supercells import supercell_sizes_in_window
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.makers.base import set_category
from phonon_flows.makers.perturb import PerturbationMaker, primitive_cell
from phonon_flows.makers.reference import ReferenceForceMaker, ReferenceRelaxMaker
from phonon_flows.makers.training_set import TrainingSetMaker
from phonon_flows.schemas.common import MaterialError

StructureInput = Structure | str | Path


# ============================================================================================
# training data: structures -> (relax) -> perturb -> label -> training set
# ============================================================================================
def _engine_elements(maker: Any) -> tuple[str, frozenset[str]] | None:
    """(engine name, supported elements) of a reference or VASP maker; None for other makers."""
    if isinstance(maker, (ReferenceForceMaker, ReferenceRelaxMaker)):
        from phonon_flows.engines.reference import reference_engine_elements

        return maker.engine, reference_engine_elements(maker.engine)
    if type(maker).__name__ in ("VaspForceMaker", "VaspRelaxMaker"):  # elements with a POTCAR in the recipe's set
        from phonon_flows.validation import vasp_elements

        return "vasp", vasp_elements()
    return None


def prepare_materials(
    structures: Sequence[StructureInput] | Mapping[str, StructureInput],
    material_ids: Sequence[str] | None = None,
    *,
    min_distance: float = MIN_DISTANCE,
    engines: Sequence[tuple[str, frozenset[str]]] = (),
    perturbation_maker: PerturbationMaker | None = None,
    check_duplicates: bool = True,
) -> tuple[list[tuple[str, Structure]], list[MaterialError]]:
    """Read and check the inputs of a flow: ``[(material_id, structure)]`` of the good ones and a
    MaterialError (stage ``input``) naming each bad one and its problem.

    Inputs are Structures or structure files; ids come from ``material_ids``, the keys of a
    mapping, or :func:`~phonon_flows.core.structures.material_id_for` (the file name for a file
    that cannot be read). Checks: readable, ordered, no overlapping atoms, elements handled by
    each of ``engines``, some supercell size in the perturbation maker's window, and (with
    ``check_duplicates``) no crystal given twice (the first is kept, see
    :func:`phonon_flows.validation.find_duplicates`).
    """
    if isinstance(structures, Mapping):
        material_ids = list(structures.keys())
        items = list(structures.values())
    else:
        items = list(structures)
    if material_ids is not None and len(material_ids) != len(items):
        raise InputError(f"{len(material_ids)} material ids for {len(items)} structures", stage="input")

    good: list[tuple[str, Structure]] = []
    bad: list[MaterialError] = []
    taken: set[str] = set()
    for i, item in enumerate(items):
        given = material_ids[i] if material_ids is not None else None
        name = given or (Path(item).name if isinstance(item, (str, Path)) else f"structure-{i}")
        try:
            structure = read_structure(item, material_id=given) if isinstance(item, (str, Path)) else item
            if isinstance(structure, Structure) and not given:
                try:
                    name = material_id_for(structure)
                except Exception:  # noqa: BLE001 - named by formula then
                    name = structure.composition.reduced_formula
            name = unique_material_id(name, taken)
            validate_structure(structure, name, min_distance=min_distance)
            for engine, elements in engines:
                check_elements(structure, elements, engine, name)
            if perturbation_maker is not None and perturbation_maker.supercell_matrix is None:
                unit = primitive_cell(structure) if perturbation_maker.use_primitive else structure
                one_atom = len(unit) == 1 or len(primitive_cell(unit)) == 1
                lo, hi = perturbation_maker.min_atoms, perturbation_maker.max_atoms
                if not one_atom and not supercell_sizes_in_window(len(unit), lo, hi):
                    raise InputError(
                        f"no supercell of this {len(unit)}-atom cell has between {lo} and {hi} atoms "
                        "(widen the supercell window)",
                        material_id=name,
                        stage="input",
                    )
        except PhononFlowsError as err:
            name = unique_material_id(err.material_id or name, taken)
            taken.add(name)
            bad.append(MaterialError(material_id=name, stage="input", reason=err.reason))
            continue
        taken.add(name)
        good.append((name, structure))
    if check_duplicates and len(good) > 1:  # the same crystal twice is computed once
        from phonon_flows.validation import duplicate_reason, find_duplicates

        dups = find_duplicates(good)
        bad += [MaterialError(material_id=mid, stage="input", reason=duplicate_reason(first)) for mid, first in dups.items()]
        good = [g for g in good if g[0] not in dups]
    return good, bad


@dataclass
class TrainingDataMaker(Maker):
    """Structures -> (relax) -> perturbed supercells -> labels -> MACE training set.

    Defaults follow the recipe with the reference engine standing in for DFT: relax with CHGNet,
    6 supercells of ~100-200 atoms with every atom displaced by 0.01-0.05 Å, labels from CHGNet.
    :meth:`with_reference` and :meth:`with_vasp` build the two usual set-ups.

    ``relax_maker``: ReferenceRelaxMaker, VaspRelaxMaker or None (inputs already relaxed).
    ``force_maker``: ReferenceForceMaker (one batched job per material) or VaspForceMaker (one
    VASP single point per supercell).
    """

    name: str = "training data"
    relax_maker: Maker | None = field(default_factory=ReferenceRelaxMaker)
    perturbation_maker: PerturbationMaker = field(default_factory=PerturbationMaker)
    force_maker: Maker = field(default_factory=ReferenceForceMaker)
    training_set_maker: TrainingSetMaker = field(default_factory=TrainingSetMaker)
    min_distance: float = MIN_DISTANCE
    category: str | None = "cpu"

    @classmethod
    def with_reference(cls, engine: str = "chgnet", relax: bool = True, engine_kwargs: dict | None = None,
                       **kwargs: Any) -> TrainingDataMaker:
        """Relax (optionally) and label with a reference engine (``chgnet`` or ``emt``)."""
        kw = dict(engine=engine, engine_kwargs=dict(engine_kwargs or {}))
        return cls(
            relax_maker=ReferenceRelaxMaker(**kw) if relax else None,
            force_maker=ReferenceForceMaker(**kw),
            **kwargs,
        )

    @classmethod
    def with_vasp(cls, relax: bool = True, **kwargs: Any) -> TrainingDataMaker:
        """Relax (optionally) and label with VASP, the recipe's settings, through atomate2."""
        from phonon_flows.makers.vasp import VaspForceMaker, VaspRelaxMaker

        return cls(relax_maker=VaspRelaxMaker() if relax else None, force_maker=VaspForceMaker(), **kwargs)

    def make(
        self,
        structures: Sequence[StructureInput] | Mapping[str, StructureInput],
        material_ids: Sequence[str] | None = None,
    ) -> Flow:
        """The flow for ``structures`` (Structures or files; a mapping gives the ids). Its output
        is the TrainingSetDoc."""
        engines = [e for e in (_engine_elements(self.relax_maker), _engine_elements(self.force_maker)) if e]
        materials, failed = prepare_materials(
            structures, material_ids, min_distance=self.min_distance, engines=engines,
            perturbation_maker=self.perturbation_maker,
        )
        jobs: list = []
        entries: list = []
        entry_ids: list[str] = []
        checkpoints: dict[str, dict[str, Any]] = {}
        n = self.perturbation_maker.n_structures
        batched = isinstance(self.force_maker, ReferenceForceMaker)
        for mid, structure in materials:
            stages: dict[str, Any] = {}
            source: Any = structure
            if self.relax_maker is not None:
                relax = self.relax_maker.make(structure, material_id=mid)
                if mid not in relax.name:
                    relax.name = f"{relax.name} {mid}"
                jobs.append(relax)
                source = relax.output.structure
                stages["relax"] = relax.output.material_id
            perturb = self.perturbation_maker.make(source, material_id=mid)
            perturb.name = f"{self.perturbation_maker.name} {mid}"
            jobs.append(perturb)
            stages["perturb"] = perturb.output.material_id
            if batched:
                label = self.force_maker.make(perturb.output.structures, material_id=mid)
                label.name = f"{self.force_maker.name} {mid}"
                jobs.append(label)
                entries.append(label.output)
                entry_ids.append(mid)
            else:
                for i in range(n):
                    label = self.force_maker.make(perturb.output.structures[i], material_id=mid, perturbation_index=i)
                    jobs.append(label)
                    entries.append(label.output)
                    entry_ids.append(mid)
            checkpoints[mid] = stages  # a material failing after these stages failed in labelling
        collect = self.training_set_maker.make(entries, entry_ids, failed, checkpoints)
        collect.name = self.training_set_maker.name
        jobs.append(collect)
        flow = Flow(jobs, output=collect.output, name=self.name)
        if self.category:
            set_category(flow, self.category)
        return flow


# ============================================================================================
# TrainingCampaignMaker and ScreeningMaker are added below.
# ============================================================================================
# Both build STATIC flows: every job exists when the flow is made, and every job has a
# deterministic uuid derived from (campaign, material structure hash, stage, settings and the keys
# of the jobs it depends on). Rerunning a campaign on the same store therefore finds its own
# finished outputs (phonon_flows.runner.run_campaign skips them), never writes a second document
# for the same work, and changing a setting changes the keys of exactly the jobs it affects.
# ============================================================================================
import hashlib as _hashlib  # noqa: E402
import json as _json  # noqa: E402
import uuid as _uuidlib  # noqa: E402

import numpy as np  # noqa: E402
from jobflow import Job, OnMissing, job  # noqa: E402
from jobflow.core.reference import OutputReference  # noqa: E402

#: namespace of the deterministic job uuids (uuid5)
JOB_UUID_NAMESPACE = _uuidlib.UUID("7a0f1c52-3b1e-4d0a-9a57-4f8f3f0c6e21")

#: the stages of a campaign, in flow order (job metadata ``phonon_flows.stage``)
CAMPAIGN_STAGES = (
    "campaign", "relax", "perturb", "label", "training-set", "train", "phonon-reference", "phonon-mlip", "benchmark",
)

REFERENCE_NOTES = {
    "chgnet": "The reference is CHGNet 0.3.0, a pretrained universal potential standing in for DFT: NOT DFT.",
    "emt": "The reference is ASE's EMT, an empirical potential for tests: NOT DFT.",
    "vasp": "The reference is DFT (VASP, PBE) with the recipe's settings.",
}


def _strip_versions(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_versions(v) for k, v in obj.items() if k != "@version"}
    if isinstance(obj, (list, tuple)):
        return [_strip_versions(v) for v in obj]
    return obj


def settings_payload(obj: Any) -> Any:
    """A JSON-able form of makers/settings for hashing (package versions left out, so that an
    upgrade alone does not invalidate finished work)."""
    from monty.json import jsanitize

    return _strip_versions(jsanitize(obj, strict=True, enum_values=True, allow_bson=False))


def settings_hash(*parts: Any) -> str:
    """sha256 of the JSON form of ``parts`` (makers, dicts, upstream keys)."""
    text = _json.dumps(settings_payload(list(parts)), sort_keys=True, default=str)
    return _hashlib.sha256(text.encode()).hexdigest()


def job_key(campaign: str, material_hash: str | None, stage: str, settings: str) -> str:
    """The key of one job: sha256 of (campaign, material structure hash, stage, settings hash)."""
    text = _json.dumps([campaign, material_hash, stage, settings])
    return _hashlib.sha256(text.encode()).hexdigest()


def key_uuid(key: str) -> str:
    """The job uuid of a key (uuid5 in :data:`JOB_UUID_NAMESPACE`)."""
    return str(_uuidlib.uuid5(JOB_UUID_NAMESPACE, key))


def _remap(obj: Any, mapping: dict[str, str]) -> Any:
    """``obj`` with every OutputReference to a uuid in ``mapping`` pointed at the new uuid."""
    if isinstance(obj, OutputReference):
        if obj.uuid in mapping:
            return OutputReference(mapping[obj.uuid], attributes=obj.attributes, output_schema=obj.output_schema)
        return obj
    if isinstance(obj, list):
        return [_remap(v, mapping) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_remap(v, mapping) for v in obj)
    if isinstance(obj, dict):
        return {k: _remap(v, mapping) for k, v in obj.items()}
    return obj


def _walk(flow: Flow, prefix: str, mapping: dict[str, str], jobs: list[Job], flows: list[Flow]) -> None:
    mapping[flow.uuid] = key_uuid(f"{prefix}/flow")
    flows.append(flow)
    for i, item in enumerate(flow.jobs):
        if isinstance(item, Flow):
            _walk(item, f"{prefix}/{i}", mapping, jobs, flows)
        else:
            mapping[item.uuid] = key_uuid(f"{prefix}/{i}")
            jobs.append(item)


def assign_key(obj: Job | Flow, key: str) -> Job | Flow:
    """Give a Job (or every job of a Flow made by another maker) the deterministic uuid of ``key``.

    Call it right after the job or flow is made, before its output is handed to other jobs: the
    job's ``uuid`` and ``output`` reference change (``Job.set_uuid``); inside a Flow every job gets
    ``uuid5(key/position)``, and the references between them, their hosts and the flow's output
    follow.
    """
    if isinstance(obj, Job):
        obj.set_uuid(key_uuid(key))
        return obj
    mapping: dict[str, str] = {}
    jobs: list[Job] = []
    flows: list[Flow] = []
    _walk(obj, key, mapping, jobs, flows)
    for j in jobs:
        j.function_args = _remap(j.function_args, mapping)
        j.function_kwargs = _remap(j.function_kwargs, mapping)
        j.hosts = [mapping.get(h, h) for h in j.hosts]
        j.set_uuid(mapping[j.uuid])
    for f in flows:
        f.output = _remap(f.output, mapping)
        f.hosts = [mapping.get(h, h) for h in f.hosts]
        f.uuid = mapping[f.uuid]
    return obj


def _jobs_of(obj: Job | Flow) -> list[Job]:
    if isinstance(obj, Job):
        return [obj]
    out: list[Job] = []
    for item in obj.jobs:
        out.extend(_jobs_of(item))
    return out


def _category(job: Job) -> str | None:
    return (job.config.manager_config or {}).get("_category")


@dataclass
class _CampaignBuilder:
    """Collects the jobs of a campaign with their keys, stages and materials."""

    campaign: str
    jobs: list = field(default_factory=list)
    records: list = field(default_factory=list)

    def add(
        self,
        obj: Job | Flow,
        stage: str,
        material_id: str | None,
        material_hash: str | None,
        settings: str,
        category: str,
        split: str | None = None,
        name: str | None = None,
    ) -> tuple[Job | Flow, str]:
        from phonon_flows.schemas.campaign import CampaignJob
        from phonon_flows.store import tag_metadata

        key = job_key(self.campaign, material_hash, stage, settings)
        assign_key(obj, key)
        if name:
            obj.name = name
        for j in _jobs_of(obj):
            if _category(j) is None:
                set_category(j, category)
        tag_metadata(obj, campaign=self.campaign, material_id=material_id, stage=stage, key=key, split=split)
        self.jobs.append(obj)
        for j in _jobs_of(obj):
            self.records.append(
                CampaignJob(uuid=j.uuid, name=j.name, stage=stage, material_id=material_id, category=_category(j))
            )
        return obj, key


def _input_items(
    structures: Sequence[StructureInput] | Mapping[str, StructureInput], material_ids: Sequence[str] | None
) -> tuple[list, list[str | None], list[str | None]]:
    """Items, their ids (mapping keys, given ids, file stems, or None) and sources (file paths)."""
    if isinstance(structures, Mapping):
        ids: list[str | None] = [str(k) for k in structures]
        items = list(structures.values())
    else:
        items = list(structures)
        if material_ids is not None:
            if len(material_ids) != len(items):
                raise InputError(f"{len(material_ids)} material ids for {len(items)} structures", stage="input")
            ids = [
                str(m) if m else (Path(it).stem if isinstance(it, (str, Path)) else None)
                for m, it in zip(material_ids, items, strict=True)
            ]
        else:
            ids = [Path(it).stem if isinstance(it, (str, Path)) else None for it in items]
    sources = [str(it) if isinstance(it, (str, Path)) else None for it in items]
    return items, ids, sources


def _prepare_campaign_inputs(structures, material_ids, engines, perturbation_maker, min_distance):
    """``(materials, failures, sources, aliases)``: prepared materials as primitive cells, input
    failures, the file of each material id, and the names a user may call each material by."""
    items, ids, sources = _input_items(structures, material_ids)
    good, bad = prepare_materials(
        items, ids if any(ids) else None, min_distance=min_distance, engines=engines,
        perturbation_maker=perturbation_maker,
    )
    # prepare_materials keeps input order and names each good material with the id given (made
    # unique with -2, -3...); match them back to their inputs to know their files
    src_by_id: dict[str, str | None] = {}
    aliases: dict[str, set[str]] = {}
    remaining = list(zip(ids, sources, strict=True))
    for mid, _ in good:
        for k, (given, src) in enumerate(remaining):
            if given is None or mid == given or mid.startswith(f"{given}-"):
                src_by_id[mid] = src
                names = {mid}
                if given:
                    names.add(given)
                if src:
                    names |= {src, Path(src).name, Path(src).stem}
                aliases[mid] = names
                remaining.pop(k)
                break
    materials = [(mid, primitive_cell(s)) for mid, s in good]
    return materials, bad, src_by_id, aliases


def _resolve_holdout(holdout: Sequence[str], materials, failed, aliases) -> list[str]:
    ids = [mid for mid, _ in materials]
    failed_ids = {e.material_id for e in failed}
    chosen: list[str] = []
    unknown: list[str] = []
    for h in holdout:
        h = str(h)
        hits = [mid for mid in ids if h in aliases.get(mid, {mid})]
        if hits:
            chosen.extend(m for m in hits if m not in chosen)
        elif h not in failed_ids and Path(h).stem not in failed_ids and Path(h).name not in failed_ids:
            unknown.append(h)
    if unknown:
        raise InputError(
            f"held-out material(s) {', '.join(unknown)} are not among the inputs ({', '.join(ids) or 'none'})",
            stage="input",
        )
    return chosen


def _supercell_for(structure: Structure, phonon_maker: Any, material_id: str) -> list[list[int]]:
    from phonon_flows.core.supercells import choose_supercell_matrix

    m = choose_supercell_matrix(structure, phonon_maker.min_atoms, phonon_maker.max_atoms, material_id=material_id)
    return np.asarray(m).astype(int).tolist()


def _n_finite_displacements(structure: Structure, supercell_matrix, settings: dict) -> int:
    from phonon_flows.core import phonons as ph_core

    phonon = ph_core.make_phonopy(structure, supercell_matrix, symprec=settings["symprec"])
    return len(ph_core.generate_displacements(
        phonon, distance=settings["displacement"], number_of_snapshots=settings.get("random_displacements"),
        random_seed=settings.get("random_seed"),
    ))


@job
def record_campaign(doc: Any) -> Any:
    """First job of a campaign: stores its CampaignDoc (materials, split, settings, jobs)."""
    return doc


def with_model(phonon_maker: Any, model_sha256: Any) -> Any:
    """A copy of a PhononMaker computing forces with the MACE model ``model_sha256`` (a sha256 or
    a reference to a TrainingDoc's ``model_sha256``, resolved when the job runs)."""
    import dataclasses

    kwargs = {**dict(phonon_maker.engine_kwargs), "model_sha256": model_sha256}
    return dataclasses.replace(phonon_maker, engine="mace", engine_kwargs=kwargs, force_maker=None)


@dataclass
class TrainingCampaignMaker(Maker):
    """A whole training campaign as one static jobflow Flow.

    materials -> (relax) -> perturb -> label per TRAINING material -> training set -> MACE
    -> phonons of the HELD-OUT materials with MACE and with the reference -> benchmark (paper
    metrics, stability confusion matrix, polymorph analysis).

    The split is by material and explicit (``holdout``: material ids, file names or stems); it
    is recorded in the campaign's first document (:class:`~phonon_flows.schemas.campaign.CampaignDoc`)
    and in every job's metadata (``phonon_flows.split``). Held-out materials are relaxed with the
    reference, and both phonon calculations of a material use the same relaxed structure and the
    same supercell matrix. Every element of a held-out material must be in some training material.

    Parameters
    ----------
    name
        Campaign name (part of every job key: two campaigns never share jobs).
    engine, engine_kwargs
        The reference: ``"chgnet"`` (CHGNet 0.3.0, a pretrained potential standing in for DFT),
        ``"emt"`` (ASE EMT, for tests) or ``"vasp"`` (DFT with the recipe's settings, through the
        atomate2 VASP makers).
    n_perturbations, min_atoms, max_atoms, seed
        Perturbed supercells per training material, the supercell window (atoms) of the
        perturbed and of the phonon supercells, and the campaign seed.
    relax, relax_kwargs
        Relax inputs with the reference first (``ReferenceRelaxMaker``/``VaspRelaxMaker``
        fields, e.g. ``{"fmax": 0.005}``).
    preset, hyperparameters
        MACE settings: a preset (``paper`` or ``small``) with overrides (dict), or a
        :class:`~phonon_flows.schemas.training.MaceHyperparameters`.
    training_maker
        A MaceTrainingMaker to use as is (else made from preset/hyperparameters/training_kwargs).
    phonon_maker
        A PhononMaker whose settings (displacement, temperatures, mesh, cutoff, tolerance...)
        both phonon calculations use; its engine is replaced.
    mlip_engine_kwargs
        Extra arguments of the MACE engine in the phonon jobs (``device``, ``batch_size``...).
    benchmark_maker
        The BenchmarkMaker.
    holdout
        Default held-out materials (``make(..., holdout=...)`` wins).
    """

    name: str = "campaign"
    engine: str = "chgnet"
    engine_kwargs: dict = field(default_factory=dict)
    n_perturbations: int = 6
    min_atoms: int = 100
    max_atoms: int = 200
    seed: int = 123
    relax: bool = True
    relax_kwargs: dict = field(default_factory=dict)
    preset: str = "paper"
    hyperparameters: Any = None
    training_kwargs: dict = field(default_factory=dict)
    training_maker: Maker | None = None
    phonon_maker: Maker | None = None
    mlip_engine_kwargs: dict = field(default_factory=dict)
    benchmark_maker: Maker | None = None
    holdout: Sequence[str] = ()
    min_distance: float = MIN_DISTANCE

    # -- the makers of each stage ---------------------------------------------------------
    @property
    def engine_name(self) -> str:
        from phonon_flows.engines import REFERENCE_ENGINES

        key = self.engine.lower()
        if key not in (*REFERENCE_ENGINES, "vasp"):
            raise InputError(f"reference engine must be one of {(*REFERENCE_ENGINES, 'vasp')}, not {self.engine!r}")
        return key

    def relax_maker(self) -> Maker | None:
        if not self.relax:
            return None
        if self.engine_name == "vasp":
            from phonon_flows.makers.vasp import VaspRelaxMaker as cls

            kwargs = {}
        else:
            cls, kwargs = ReferenceRelaxMaker, {"engine": self.engine_name, "engine_kwargs": dict(self.engine_kwargs)}
        unknown = sorted(set(self.relax_kwargs) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"relax_kwargs {', '.join(unknown)} are not settings of {cls.__name__}", stage="relax")
        return cls(**kwargs, **self.relax_kwargs)

    def force_maker(self) -> Maker:
        if self.engine_name == "vasp":
            from phonon_flows.makers.vasp import VaspForceMaker

            return VaspForceMaker()
        return ReferenceForceMaker(engine=self.engine_name, engine_kwargs=dict(self.engine_kwargs))

    def perturbation_maker(self) -> PerturbationMaker:
        return PerturbationMaker(
            n_structures=self.n_perturbations, seed=self.seed, min_atoms=self.min_atoms, max_atoms=self.max_atoms
        )

    def mace_training_maker(self) -> Maker:
        if self.training_maker is not None:
            return self.training_maker
        from phonon_flows.makers.training import MaceTrainingMaker
        from phonon_flows.schemas.training import MaceHyperparameters

        hp = self.hyperparameters
        if hp is None or isinstance(hp, Mapping):
            try:
                hp = MaceHyperparameters.preset(self.preset, **dict(hp or {}))
            except ValueError as exc:
                raise InputError(str(exc), stage="train") from None
        return MaceTrainingMaker(hyperparameters=hp, **self.training_kwargs)

    def base_phonon_maker(self) -> Maker:
        from phonon_flows.makers.phonons import PhononMaker

        if self.phonon_maker is not None:
            return self.phonon_maker
        return PhononMaker(min_atoms=self.min_atoms, max_atoms=self.max_atoms)

    def phonon_makers(self) -> tuple[Maker, Maker]:
        """(reference, MLIP) PhononMakers sharing the phonon settings."""
        import dataclasses

        base = self.base_phonon_maker()
        mlip = dataclasses.replace(base, name="phonons", engine="mace", engine_kwargs=dict(self.mlip_engine_kwargs),
                                   force_maker=None)
        if self.engine_name == "vasp":
            ref = dataclasses.replace(base, name="phonons", engine="vasp", engine_kwargs={}, force_maker=None)
        else:
            ref = dataclasses.replace(base, name="phonons", engine=self.engine_name,
                                      engine_kwargs=dict(self.engine_kwargs), force_maker=None)
        return ref, mlip

    def bench_maker(self) -> Maker:
        if self.benchmark_maker is not None:
            return self.benchmark_maker
        from phonon_flows.makers.benchmark import BenchmarkMaker

        return BenchmarkMaker()

    # -- the flow -------------------------------------------------------------------------
    def make(
        self,
        structures: Sequence[StructureInput] | Mapping[str, StructureInput],
        holdout: Sequence[str] | None = None,
        material_ids: Sequence[str] | None = None,
    ) -> Flow:
        """The campaign's Flow (static; deterministic job uuids). Its output is the BenchmarkDoc
        (the TrainingDoc when nothing is held out).

        ``structures``: Structures or files (CIF, POSCAR, ...), or a mapping id -> either.
        Material ids: the mapping's keys, ``material_ids``, the file stems, or formula + hash.
        Inputs that fail the checks are recorded (CampaignDoc.input_failures) and get no jobs.
        """
        from phonon_flows.core.structures import structure_hash
        from phonon_flows.schemas.campaign import CampaignDoc, CampaignMaterial

        ref_name = self.engine_name
        holdout = list(self.holdout if holdout is None else holdout)
        relax_maker = self.relax_maker()
        force_maker = self.force_maker()
        perturbation_maker = self.perturbation_maker()
        training_set_maker = TrainingSetMaker()
        training_maker = self.mace_training_maker()
        ref_phonon_maker, mlip_phonon_maker = self.phonon_makers()
        bench_maker = self.bench_maker()
        bench_maker_settings = settings_payload(bench_maker)

        engines = [e for e in (_engine_elements(relax_maker), _engine_elements(force_maker)) if e]
        materials, failed, sources, aliases = _prepare_campaign_inputs(
            structures, material_ids, engines, perturbation_maker, self.min_distance
        )
        held = _resolve_holdout(holdout, materials, failed, aliases)
        train = [(mid, s) for mid, s in materials if mid not in held]
        test = [(mid, s) for mid, s in materials if mid in held]
        if not train:
            raise InputError(
                "no training material left: every valid input is held out or failed the input checks"
                + (f" ({'; '.join(f'{e.material_id}: {e.reason}' for e in failed)})" if failed else ""),
                stage="input",
            )
        train_elements = {el.symbol for _, s in train for el in s.composition.elements}
        kept_test = []
        for mid, s in test:
            missing = sorted({el.symbol for el in s.composition.elements} - train_elements)
            if missing:
                failed.append(MaterialError(
                    material_id=mid, stage="input",
                    reason=f"held-out material has element(s) {', '.join(missing)} that no training material has",
                ))
                continue
            kept_test.append((mid, s))
        test = kept_test

        phonon_settings_ = ref_phonon_maker.settings()
        smats: dict[str, list[list[int]]] = {}
        for mid, s in list(test):
            try:
                smats[mid] = _supercell_for(s, ref_phonon_maker, mid)
            except PhononFlowsError as err:
                failed.append(MaterialError(material_id=mid, stage="input", reason=err.reason))
                test.remove((mid, s))

        b = _CampaignBuilder(self.name)
        hashes = {mid: structure_hash(s) for mid, s in materials}
        campaign_uuid = key_uuid(job_key(self.name, None, "campaign", "flow"))

        # the campaign record: its own key depends on everything else, so it is made last and
        # put first in the flow
        relax_out: dict[str, Any] = {}
        relax_keys: dict[str, str] = {}

        def add_relax(mid: str, s: Structure, split: str) -> None:
            if relax_maker is None:
                relax_out[mid] = None
                relax_keys[mid] = "none"
                return
            r = relax_maker.make(s, material_id=mid)
            _, key = b.add(r, "relax", mid, hashes[mid], settings_hash(relax_maker), "cpu", split,
                           name=f"{getattr(relax_maker, 'name', 'relax')} {mid}")
            relax_out[mid] = r.output
            relax_keys[mid] = key

        # -- training materials: relax -> perturb -> label
        entries: list = []
        entry_ids: list[str] = []
        entry_keys: list[str] = []
        checkpoints: dict[str, dict[str, Any]] = {}
        batched = isinstance(force_maker, ReferenceForceMaker)
        for mid, s in train:
            add_relax(mid, s, "train")
            stages: dict[str, Any] = {}
            source = relax_out[mid].structure if relax_out[mid] is not None else s
            if relax_out[mid] is not None:
                stages["relax"] = relax_out[mid].material_id
            p = perturbation_maker.make(source, material_id=mid)
            _, pkey = b.add(p, "perturb", mid, hashes[mid], settings_hash(perturbation_maker, relax_keys[mid]), "cpu",
                            "train", name=f"perturb {mid}")
            stages["perturb"] = p.output.material_id
            if batched:
                lab = force_maker.make(p.output.structures, material_id=mid)
                _, lkey = b.add(lab, "label", mid, hashes[mid], settings_hash(force_maker, pkey), "cpu", "train",
                                name=f"label {mid}")
                entries.append(lab.output)
                entry_ids.append(mid)
                entry_keys.append(lkey)
            else:
                for i in range(self.n_perturbations):
                    lab = force_maker.make(p.output.structures[i], material_id=mid, perturbation_index=i)
                    _, lkey = b.add(lab, "label", mid, hashes[mid], settings_hash(force_maker, pkey, i), "cpu",
                                    "train", name=f"label {mid} #{i}")
                    entries.append(lab.output)
                    entry_ids.append(mid)
                    entry_keys.append(lkey)
            checkpoints[mid] = stages

        train_ids = {mid for mid, _ in train}
        ts = training_set_maker.make(entries, entry_ids, [e for e in failed if e.material_id in train_ids], checkpoints)
        _, ts_key = b.add(ts, "training-set", None, None, settings_hash(training_set_maker, entry_keys), "cpu",
                          name="training set")
        tr = training_maker.make(ts.output)
        _, tr_key = b.add(tr, "train", None, None, settings_hash(training_maker, ts_key), "gpu", name="train MACE")
        output = tr.output

        # -- held-out materials: relax -> phonons with the reference and with MACE
        ref_docs: list = []
        mlip_docs: list = []
        phonon_keys: list[str] = []
        for mid, s in test:
            add_relax(mid, s, "holdout")
            r = relax_out[mid]
            structure = r.structure if r is not None else s
            enthalpy = r.enthalpy_per_atom if r is not None else None
            if ref_name == "vasp":
                ref = self._vasp_phonons(structure, mid, smats[mid], enthalpy, phonon_settings_, s)
            else:
                ref = ref_phonon_maker.make(structure, material_id=mid, supercell_matrix=smats[mid],
                                            enthalpy_per_atom=enthalpy)
            _, rkey = b.add(ref, "phonon-reference", mid, hashes[mid],
                            settings_hash(ref_phonon_maker, relax_keys[mid], smats[mid]), "cpu", "holdout",
                            name=f"phonons {ref_name} {mid}")
            ml = with_model(mlip_phonon_maker, tr.output.model_sha256).make(
                structure, material_id=mid, supercell_matrix=smats[mid], enthalpy_per_atom=enthalpy
            )
            _, mkey = b.add(ml, "phonon-mlip", mid, hashes[mid],
                            settings_hash(mlip_phonon_maker, relax_keys[mid], smats[mid], tr_key), "gpu", "holdout",
                            name=f"phonons mace {mid}")
            ref_docs.append(ref.output)
            mlip_docs.append(ml.output)
            phonon_keys += [rkey, mkey]

        if test:
            bench = bench_maker.make(mlip_docs, ref_docs, training_doc=tr.output)
            bench.config.on_missing_references = OnMissing.NONE
            b.add(bench, "benchmark", None, None, settings_hash(bench_maker_settings, phonon_keys, tr_key), "cpu",
                  name="benchmark")
            output = bench.output

        # -- the campaign record, first in the flow
        split = {mid: "train" for mid, _ in train} | {mid: "holdout" for mid, _ in test}
        settings = {
            "reference": {"engine": ref_name, "engine_kwargs": dict(self.engine_kwargs)},
            "relax": settings_payload(relax_maker),
            "perturbation": settings_payload(perturbation_maker),
            "labels": settings_payload(force_maker),
            "training": settings_payload(training_maker),
            "phonons": phonon_settings_,
            "mlip_engine_kwargs": dict(self.mlip_engine_kwargs),
            "benchmark": bench_maker_settings,
        }
        all_keys = sorted(r.uuid for r in b.records)
        doc = CampaignDoc(
            campaign=self.name,
            campaign_type="training",
            materials=[
                CampaignMaterial(material_id=mid, formula=s.composition.reduced_formula, split=split[mid],
                                 structure_hash=hashes[mid], n_atoms=len(s), source=sources.get(mid),
                                 supercell_matrix=smats.get(mid))
                for mid, s in materials if mid in split
            ],
            training_material_ids=[mid for mid, _ in train],
            holdout_material_ids=[mid for mid, _ in test],
            input_failures=failed,
            reference_engine=ref_name,
            reference_is_dft=ref_name == "vasp",
            reference_note=REFERENCE_NOTES.get(ref_name),
            settings=settings,
            settings_hash=settings_hash(settings, all_keys),
        )
        rec = record_campaign(doc)
        _, rec_key = b.add(rec, "campaign", None, None, doc.settings_hash, "cpu", name=f"campaign {self.name}")
        b.jobs.insert(0, b.jobs.pop())
        doc.jobs = [b.records[-1], *b.records[:-1]]
        rec.function_args = (doc,)
        flow = Flow(b.jobs, output=output, name=self.name, uuid=campaign_uuid)
        flow.metadata = {"phonon_flows": {"campaign": self.name, "campaign_type": "training"}}
        return flow

    def _vasp_phonons(self, structure, mid, smat, enthalpy, settings, unrelaxed) -> Flow:
        """Reference phonons with VASP as a STATIC flow: phonopy's displacements, one VASP single
        point per displaced supercell (their number counted on the input structure, whose
        symmetry the relaxation keeps), then force constants and the PhononDoc."""
        from phonon_flows.makers.phonons import generate_phonon_displacements, phonons_from_forces

        n = _n_finite_displacements(unrelaxed, smat, settings)
        disp = generate_phonon_displacements(structure, settings, smat, mid)
        disp.name = f"phonon displacements {mid}"
        force_maker = self.force_maker()
        forces = []
        jobs: list = [disp]
        for i in range(n):
            f = force_maker.make(disp.output["supercells"][i], material_id=mid, perturbation_index=i)
            jobs.append(f)
            forces.append(f.output)
        collect = phonons_from_forces(structure, disp.output["supercells"], forces, settings,
                                      disp.output["supercell_matrix"], None, mid, enthalpy)
        collect.config.on_missing_references = OnMissing.NONE
        collect.name = f"phonons vasp {mid}"
        jobs.append(collect)
        return Flow(jobs, output=collect.output, name=f"vasp phonons {mid}")


def _model_spec(model: Any) -> tuple[Any, list[str] | None]:
    """(model_sha256 or a reference to it, elements the model knows or None) of a model given as a
    sha256, a TrainingDoc (object or dict) or a reference to a TrainingDoc."""
    if isinstance(model, OutputReference):
        return model.model_sha256, None
    if isinstance(model, str):
        sha = model.strip().lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise InputError(f"model must be the 64-hex sha256 of a MACE model, not {model!r}", stage="input")
        return sha, None
    doc = model if isinstance(model, Mapping) else getattr(model, "__dict__", None)
    if doc is None:
        raise InputError(f"model must be a sha256 or a TrainingDoc, not {type(model).__name__}", stage="input")
    if doc.get("failed"):
        raise InputError(f"the training failed, there is no model: {doc.get('error')}", stage="input")
    sha = doc.get("model_sha256")
    if not sha:
        raise InputError("the TrainingDoc has no model_sha256", stage="input")
    return sha, list(doc.get("elements") or []) or None


def training_doc_for(store: Any, model_sha256: str) -> dict | None:
    """The TrainingDoc (dict, model left in the data store) of a model in ``store``, or None."""
    store.connect()
    found = store.query_one({"output.model_sha256": model_sha256, "output.hyperparameters": {"$exists": True}},
                            properties=["output"], load=False)
    return (found or {}).get("output")


@dataclass
class ScreeningMaker(Maker):
    """New materials screened with a trained MACE model, one PhononDoc per material.

    materials -> relax with the model (optional) -> phonons with the model (stability, thermal
    properties, bands). A static Flow with deterministic job uuids, like the training campaign.

    Parameters
    ----------
    name
        Campaign name.
    model
        The model: its sha256 (fetched from the job store when the jobs run), a TrainingDoc, or a
        reference to a training job's output (a screening in the same flow as its training).
    model_elements
        Elements the model knows, for the input checks (taken from the TrainingDoc when given;
        else from ``store`` when given).
    store
        A JobStore to look the model's TrainingDoc up in when the flow is made (input checks).
    relax, relax_kwargs
        Relax with the model first (``ReferenceRelaxMaker`` fields: ``fmax``, ``steps``,
        ``relax_cell``...). The model is trained on forces: a cell relaxation trusts its stress.
    phonon_maker, engine_kwargs
        The PhononMaker template (settings) and extra MACE engine arguments (``device``, ...).
    """

    name: str = "screening"
    model: Any = None
    model_elements: Sequence[str] | None = None
    store: Any = None
    relax: bool = True
    relax_kwargs: dict = field(default_factory=dict)
    phonon_maker: Maker | None = None
    engine_kwargs: dict = field(default_factory=dict)
    min_atoms: int = 100
    max_atoms: int = 200
    min_distance: float = MIN_DISTANCE

    def make(
        self,
        structures: Sequence[StructureInput] | Mapping[str, StructureInput],
        material_ids: Sequence[str] | None = None,
        model: Any = None,
    ) -> Flow:
        """The screening Flow; its output is the list of PhononDocs (one per valid material)."""
        import dataclasses

        from phonon_flows.core.structures import structure_hash
        from phonon_flows.makers.phonons import PhononMaker
        from phonon_flows.schemas.campaign import CampaignDoc, CampaignMaterial

        model = self.model if model is None else model
        if model is None:
            raise InputError("a screening needs a model: its sha256 or a TrainingDoc", stage="input")
        sha, elements = _model_spec(model)
        if self.model_elements is not None:
            elements = list(self.model_elements)
        if elements is None and self.store is not None and isinstance(sha, str):
            doc = training_doc_for(self.store, sha)
            if doc is None:
                raise InputError(f"no trained model with sha256 {sha} in the store", stage="input")
            if doc.get("failed"):
                raise InputError(f"the training of model {sha[:12]} failed: {doc.get('error')}", stage="input")
            elements = list(doc.get("elements") or []) or None
        engines = [("mace", frozenset(elements))] if elements else []
        base = self.phonon_maker or PhononMaker(min_atoms=self.min_atoms, max_atoms=self.max_atoms)
        phonon_maker = dataclasses.replace(with_model(base, sha), name="phonons")
        phonon_maker.engine_kwargs.update(self.engine_kwargs)
        settings_maker = dataclasses.replace(base, engine="mace", engine_kwargs=dict(self.engine_kwargs), force_maker=None)
        relax_maker = None
        if self.relax:
            relax_maker = ReferenceRelaxMaker(name="mace relax", engine="mace",
                                              engine_kwargs={**self.engine_kwargs, "model_sha256": sha},
                                              **self.relax_kwargs)
        relax_settings = ReferenceRelaxMaker(name="mace relax", engine="mace", engine_kwargs=dict(self.engine_kwargs),
                                             **self.relax_kwargs) if self.relax else None
        model_key = sha if isinstance(sha, str) else f"ref:{sha.uuid}"

        materials, failed, sources, _ = _prepare_campaign_inputs(structures, material_ids, engines, None,
                                                                 self.min_distance)
        b = _CampaignBuilder(self.name)
        hashes = {mid: structure_hash(s) for mid, s in materials}
        smats: dict[str, list[list[int]]] = {}
        docs: list = []
        kept = []
        for mid, s in materials:
            try:
                smats[mid] = _supercell_for(s, phonon_maker, mid)
            except PhononFlowsError as err:
                failed.append(MaterialError(material_id=mid, stage="input", reason=err.reason))
                continue
            kept.append((mid, s))
            structure, rkey = s, "none"
            if relax_maker is not None:
                r = relax_maker.make(s, material_id=mid)
                r.config.expose_store = True  # the model is fetched from the job's store
                _, rkey = b.add(r, "relax", mid, hashes[mid], settings_hash(relax_settings, model_key), "gpu",
                                "screen", name=f"relax mace {mid}")
                structure = r.output.structure
            ph = phonon_maker.make(structure, material_id=mid, supercell_matrix=smats[mid])
            b.add(ph, "phonon-mlip", mid, hashes[mid], settings_hash(settings_maker, rkey, smats[mid], model_key),
                  "gpu", "screen", name=f"phonons mace {mid}")
            docs.append(ph.output)

        settings = {
            "model_sha256": model_key,
            "relax": settings_payload(relax_settings),
            "phonons": settings_maker.settings(),
            "engine_kwargs": dict(self.engine_kwargs),
        }
        doc = CampaignDoc(
            campaign=self.name,
            campaign_type="screening",
            materials=[
                CampaignMaterial(material_id=mid, formula=s.composition.reduced_formula, split="screen",
                                 structure_hash=hashes[mid], n_atoms=len(s), source=sources.get(mid),
                                 supercell_matrix=smats.get(mid))
                for mid, s in kept
            ],
            screen_material_ids=[mid for mid, _ in kept],
            input_failures=failed,
            model_sha256=sha if isinstance(sha, str) else None,
            settings=settings,
            settings_hash=settings_hash(settings, sorted(r.uuid for r in b.records)),
        )
        rec = record_campaign(doc)
        b.add(rec, "campaign", None, None, doc.settings_hash, "cpu", name=f"campaign {self.name}")
        b.jobs.insert(0, b.jobs.pop())
        doc.jobs = [b.records[-1], *b.records[:-1]]
        flow = Flow(b.jobs, output=docs, name=self.name,
                    uuid=key_uuid(job_key(self.name, None, "campaign", "flow")))
        flow.metadata = {"phonon_flows": {"campaign": self.name, "campaign_type": "screening"}}
        return flow
