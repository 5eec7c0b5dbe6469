"""TrainingCampaignMaker: a whole training campaign (training data -> MACE -> phonons of the
held-out materials -> benchmark) as one static jobflow Flow with deterministic job uuids
(:mod:`phonon_flows.flows.keys`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobflow import Flow, Maker, OnMissing
from pymatgen.core import Structure

from phonon_flows.core.structures import MIN_DISTANCE, structure_hash
from phonon_flows.engines import REFERENCE_ENGINES
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.flows.builder import REFERENCE_NOTES, CampaignBuilder, record_campaign
from phonon_flows.flows.inputs import (
    StructureInput,
    maker_engine_elements,
    prepare_campaign_inputs,
    resolve_holdout,
)
from phonon_flows.flows.keys import job_key, key_uuid, settings_hash, settings_payload
from phonon_flows.flows.phonons import supercell_for, vasp_phonons, with_model
from phonon_flows.makers.benchmark import BenchmarkMaker
from phonon_flows.makers.perturb import PerturbationMaker
from phonon_flows.makers.phonons import PhononMaker
from phonon_flows.makers.reference import ReferenceForceMaker, ReferenceRelaxMaker
from phonon_flows.makers.training import MaceTrainingMaker
from phonon_flows.makers.training_set import TrainingSetMaker
from phonon_flows.schemas.campaign import CampaignDoc, CampaignMaterial
from phonon_flows.schemas.common import MaterialError
from phonon_flows.schemas.training import MaceHyperparameters


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
        key = self.engine.lower()
        if key not in (*REFERENCE_ENGINES, "vasp"):
            raise InputError(f"reference engine must be one of {(*REFERENCE_ENGINES, 'vasp')}, not {self.engine!r}")
        return key

    def relax_maker(self) -> Maker | None:
        if not self.relax:
            return None
        if self.engine_name == "vasp":
            from phonon_flows.makers.vasp import VaspRelaxMaker as cls  # atomate2's VASP: heavy, optional

            kwargs = {}
        else:
            cls, kwargs = ReferenceRelaxMaker, {"engine": self.engine_name, "engine_kwargs": dict(self.engine_kwargs)}
        unknown = sorted(set(self.relax_kwargs) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"relax_kwargs {', '.join(unknown)} are not settings of {cls.__name__}", stage="relax")
        return cls(**kwargs, **self.relax_kwargs)

    def force_maker(self) -> Maker:
        if self.engine_name == "vasp":
            from phonon_flows.makers.vasp import VaspForceMaker  # atomate2's VASP: heavy, optional

            return VaspForceMaker()
        return ReferenceForceMaker(engine=self.engine_name, engine_kwargs=dict(self.engine_kwargs))

    def perturbation_maker(self) -> PerturbationMaker:
        return PerturbationMaker(
            n_structures=self.n_perturbations, seed=self.seed, min_atoms=self.min_atoms, max_atoms=self.max_atoms
        )

    def mace_training_maker(self) -> Maker:
        if self.training_maker is not None:
            return self.training_maker
        hp = self.hyperparameters
        if hp is None or isinstance(hp, Mapping):
            try:
                hp = MaceHyperparameters.preset(self.preset, **dict(hp or {}))
            except ValueError as exc:
                raise InputError(str(exc), stage="train") from None
        return MaceTrainingMaker(hyperparameters=hp, **self.training_kwargs)

    def base_phonon_maker(self) -> Maker:
        if self.phonon_maker is not None:
            return self.phonon_maker
        return PhononMaker(min_atoms=self.min_atoms, max_atoms=self.max_atoms)

    def phonon_makers(self) -> tuple[Maker, Maker]:
        """(reference, MLIP) PhononMakers sharing the phonon settings."""
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

        engines = [e for e in (maker_engine_elements(relax_maker), maker_engine_elements(force_maker)) if e]
        materials, failed, sources, aliases = prepare_campaign_inputs(
            structures, material_ids, engines, perturbation_maker, self.min_distance
        )
        held = resolve_holdout(holdout, materials, failed, aliases)
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
                smats[mid] = supercell_for(s, ref_phonon_maker, mid)
            except PhononFlowsError as err:
                failed.append(MaterialError(material_id=mid, stage="input", reason=err.reason))
                test.remove((mid, s))

        b = CampaignBuilder(self.name)
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
                ref = vasp_phonons(self.force_maker(), structure, mid, smats[mid], enthalpy, phonon_settings_, s)
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
