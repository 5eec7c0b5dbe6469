"""TrainingCampaignMaker: a whole training campaign (training data -> MACE -> phonons of the
held-out materials -> benchmark) as one static jobflow Flow with deterministic job uuids
(:mod:`phonon_flows.flows.keys`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jobflow import Flow, Maker, OnMissing
from pymatgen.core import Structure

from phonon_flows.core.structures import MIN_DISTANCE, structure_hash
from phonon_flows.engines import DFT_ENGINES, REFERENCE_ENGINES
from phonon_flows.engines.harmonic import HARMONIC_DFT_NAME
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.flows.builder import REFERENCE_NOTES, CampaignBuilder, finish_campaign
from phonon_flows.flows.inputs import (
    StructureInput,
    maker_engine_elements,
    prepare_campaign_inputs,
    resolve_holdout,
)
from phonon_flows.flows.keys import settings_hash, settings_payload
from phonon_flows.flows.phonons import supercell_for, vasp_phonons, with_model
from phonon_flows.makers.benchmark import BenchmarkMaker
from phonon_flows.makers.perturb import PerturbationMaker
from phonon_flows.makers.phonondb import phonondb_forces
from phonon_flows.makers.phonons import PhononMaker
from phonon_flows.makers.reference import ReferenceForceMaker, ReferenceRelaxMaker
from phonon_flows.makers.training import MaceTrainingMaker
from phonon_flows.makers.training_set import TrainingSetMaker
from phonon_flows.schemas.campaign import CampaignMaterial
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
        The reference: ``"vasp"`` (the default: DFT with the recipe's settings, through the
        atomate2 VASP makers), ``"harmonic-dft"`` (phonondb's DFT force constants), or a stand-in
        named explicitly: ``"chgnet"`` (CHGNet 0.3.0, a pretrained potential standing in for DFT)
        or ``"emt"`` (ASE EMT, for tests). As on the command line (``run``/``submit``), a stand-in
        is never used unless asked for by name.
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
    supercell_matrices, use_primitive
        material id -> supercell matrix of both the perturbed and the phonon supercells, instead
        of the window's choice; with ``use_primitive=False`` the matrices are on the structures as
        given (not their primitive cells): phonondb materials use their entry's unit cell and
        ``DIM`` (see :func:`phonon_flows.demo.phonondb_campaign_maker`).
    enthalpies
        material id -> enthalpy per atom (eV/atom) of the held-out materials when they are not
        relaxed here (e.g. DFT enthalpies from a file): polymorph transitions need them.
    dft_training
        With the ``harmonic-dft`` reference: ``"perturbed"`` (the recipe: harmonic DFT labels of
        the perturbed supercells), ``"finite-displacement"`` (the entry's own DFT supercells, one
        displaced atom each) or ``"both"``.
    """

    name: str = "campaign"
    engine: str = "vasp"
    engine_kwargs: dict = field(default_factory=dict)
    n_perturbations: int = 6
    min_atoms: int = 100
    max_atoms: int = 200
    seed: int = 123
    relax: bool = True
    relax_kwargs: dict = field(default_factory=dict)
    #: with engine="vasp": an atomate2 DFPT maker (``phonon_flows.makers.vasp.RecipeBornMaker()``) whose
    #: Born charges the VASP reference phonons use (their PhononDoc.nac says so); None: no NAC
    born_maker: Maker | None = None
    preset: str = "paper"
    hyperparameters: Any = None
    training_kwargs: dict = field(default_factory=dict)
    training_maker: Maker | None = None
    phonon_maker: Maker | None = None
    mlip_engine_kwargs: dict = field(default_factory=dict)
    benchmark_maker: Maker | None = None
    holdout: Sequence[str] = ()
    min_distance: float = MIN_DISTANCE
    supercell_matrices: Mapping[str, Any] | None = None
    use_primitive: bool = True
    enthalpies: Mapping[str, float] | None = None
    dft_training: str = "perturbed"

    # -- the makers of each stage ---------------------------------------------------------
    @property
    def engine_name(self) -> str:
        key = self.engine.lower()
        if key not in (*REFERENCE_ENGINES, "vasp"):
            raise InputError(f"reference engine must be one of {(*REFERENCE_ENGINES, 'vasp')}, not {self.engine!r}")
        return key

    def relax_maker(self) -> Maker | None:
        if not self.relax or self.engine_name == HARMONIC_DFT_NAME:  # phonondb structures are DFT-relaxed
            return None
        if self.engine_name == "vasp":
            from phonon_flows.makers.vasp import VaspRelaxMaker, relax_options  # atomate2's VASP: heavy

            # the input-set options of engine_kwargs reach the relaxations too; relax_kwargs update them
            try:
                return VaspRelaxMaker.with_settings(**relax_options(self.engine_kwargs, self.relax_kwargs))
            except TypeError as exc:
                raise InputError(f"relax_kwargs for VASP: {exc}", stage="relax") from None
        else:
            cls, kwargs = ReferenceRelaxMaker, {"engine": self.engine_name, "engine_kwargs": dict(self.engine_kwargs)}
        unknown = sorted(set(self.relax_kwargs) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"relax_kwargs {', '.join(unknown)} are not settings of {cls.__name__}", stage="relax")
        return cls(**kwargs, **self.relax_kwargs)

    def force_maker(self) -> Maker:
        if self.engine_name == "vasp":
            from phonon_flows.makers.vasp import VaspForceMaker  # atomate2's VASP: heavy, optional

            # user_incar_settings & co, run_vasp_kwargs, or static_maker=: an unknown option is an InputError
            return VaspForceMaker.with_settings(**self.engine_kwargs)
        return ReferenceForceMaker(engine=self.engine_name, engine_kwargs=dict(self.engine_kwargs))

    def perturbation_maker(self) -> PerturbationMaker:
        return PerturbationMaker(
            n_structures=self.n_perturbations, seed=self.seed, min_atoms=self.min_atoms, max_atoms=self.max_atoms,
            use_primitive=self.use_primitive,
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

        The steps: check the inputs; split them into training and held-out materials; choose the
        phonon supercells of the held-out ones; training materials: relax -> perturb -> label ->
        training set -> MACE; held-out materials: relax -> phonons with the reference and with
        MACE -> benchmark; the campaign record (made last, first in the flow).
        """
        stages = self._stage_makers()
        materials, failed, sources, aliases = prepare_campaign_inputs(
            structures, material_ids, stages.engines(), stages.perturbation, self.min_distance
        )
        held = resolve_holdout(list(self.holdout if holdout is None else holdout), materials, failed, aliases)
        train, test = split_materials(materials, held, failed)
        smats = holdout_supercells(test, stages.ref_phonons, failed, self.supercell_matrices)

        b = CampaignBuilder(self.name)
        hashes = {mid: structure_hash(s) for mid, s in materials}
        relaxations = _Relaxations(b, stages.relax, hashes)
        tr, tr_key = self._add_training(b, stages, train, failed, hashes, relaxations)
        output = tr.output
        if test:
            ref_docs, mlip_docs, phonon_keys = self._add_holdout_phonons(
                b, stages, test, smats, hashes, relaxations, tr.output.model_sha256, tr_key
            )
            bench = stages.benchmark.make(mlip_docs, ref_docs, training_doc=tr.output)
            bench.config.on_missing_references = OnMissing.NONE
            b.add(bench, "benchmark", None, None, settings_hash(stages.benchmark_settings, phonon_keys, tr_key), "cpu",
                  name="benchmark")
            output = bench.output

        split = {mid: "train" for mid, _ in train} | {mid: "holdout" for mid, _ in test}
        return finish_campaign(
            b, "training", self._campaign_settings(stages), output,
            materials=[
                CampaignMaterial(material_id=mid, formula=s.composition.reduced_formula, split=split[mid],
                                 structure_hash=hashes[mid], n_atoms=len(s), source=sources.get(mid),
                                 supercell_matrix=smats.get(mid))
                for mid, s in materials if mid in split
            ],
            training_material_ids=[mid for mid, _ in train],
            holdout_material_ids=[mid for mid, _ in test],
            input_failures=failed,
            reference_engine=self.engine_name,
            reference_is_dft=self.engine_name in DFT_ENGINES,
            reference_note=REFERENCE_NOTES.get(self.engine_name),
        )

    # -- the steps ------------------------------------------------------------------------
    def _stage_makers(self) -> _StageMakers:
        ref_phonons, mlip_phonons = self.phonon_makers()
        bench = self.bench_maker()
        return _StageMakers(
            relax=self.relax_maker(),
            force=self.force_maker(),
            perturbation=self.perturbation_maker(),
            training_set=TrainingSetMaker(),
            training=self.mace_training_maker(),
            ref_phonons=ref_phonons,
            mlip_phonons=mlip_phonons,
            benchmark=bench,
            benchmark_settings=settings_payload(bench),
        )

    def _add_training(self, b, stages, train, failed, hashes, relaxations) -> tuple[Any, str]:
        """Training materials: relax -> perturb -> label, then the training set and the MACE
        training job; returns the training job and its key."""
        entries: list = []
        entry_ids: list[str] = []
        entry_keys: list[str] = []
        checkpoints: dict[str, dict[str, Any]] = {}
        for mid, s in train:
            relaxations.add(mid, s, "train")
            checkpoints[mid], labels = self._add_labels(b, stages, mid, s, hashes[mid], relaxations)
            for label, lkey in labels:
                entries.append(label.output)
                entry_ids.append(mid)
                entry_keys.append(lkey)

        train_ids = {mid for mid, _ in train}
        ts = stages.training_set.make(entries, entry_ids, [e for e in failed if e.material_id in train_ids], checkpoints)
        _, ts_key = b.add(ts, "training-set", None, None, settings_hash(stages.training_set, entry_keys), "cpu",
                          name="training set")
        tr = stages.training.make(ts.output)
        _, tr_key = b.add(tr, "train", None, None, settings_hash(stages.training, ts_key), "gpu", name="train MACE")
        return tr, tr_key

    def _add_labels(self, b, stages, mid, s, material_hash, relaxations) -> tuple[dict[str, Any], list]:
        """Perturb one (relaxed) training material and label its supercells: the stages it has
        passed (for the training set's failure records) and ``[(label job, key)]``."""
        checkpoint: dict[str, Any] = {}
        relaxed = relaxations.outputs[mid]
        source = relaxed.structure if relaxed is not None else s
        if relaxed is not None:
            checkpoint["relax"] = relaxed.material_id
        labels = []
        if self.engine_name == HARMONIC_DFT_NAME and self.dft_training in ("finite-displacement", "both"):
            fd = phonondb_forces(self._entry_path(mid), mid)
            labels.append(b.add(fd, "label-fd", mid, material_hash, settings_hash(self._entry_path(mid)), "cpu",
                                "train", name=f"phonondb DFT supercells {mid}"))
            if self.dft_training == "finite-displacement":
                return checkpoint, labels
        perturbation = stages.perturbation
        if self.supercell_matrices and mid in self.supercell_matrices:  # the supercell of the reference (DIM)
            perturbation = dataclasses.replace(perturbation, supercell_matrix=_matrix(self.supercell_matrices[mid]))
        p = perturbation.make(source, material_id=mid)
        _, pkey = b.add(p, "perturb", mid, material_hash, settings_hash(perturbation, relaxations.keys[mid]),
                        "cpu", "train", name=f"perturb {mid}")
        checkpoint["perturb"] = p.output.material_id
        if isinstance(stages.force, ReferenceForceMaker):  # one batched job per material
            lab = stages.force.make(p.output.structures, material_id=mid)
            labels.append(b.add(lab, "label", mid, material_hash, settings_hash(stages.force, pkey), "cpu", "train",
                                name=f"label {mid}"))
        else:  # one single point per supercell (VASP)
            for i in range(self.n_perturbations):
                lab = stages.force.make(p.output.structures[i], material_id=mid, perturbation_index=i)
                labels.append(b.add(lab, "label", mid, material_hash, settings_hash(stages.force, pkey, i), "cpu",
                                    "train", name=f"label {mid} #{i}"))
        return checkpoint, labels

    def _entry_path(self, mid: str) -> str:
        entries = dict(self.engine_kwargs.get("entries") or {})
        if mid not in entries:
            raise InputError("no phonondb entry given for this material (engine_kwargs['entries'])",
                             material_id=mid, stage="label")
        return str(entries[mid])

    def _add_holdout_phonons(self, b, stages, test, smats, hashes, relaxations, model_sha256, tr_key):
        """Held-out materials: relax -> phonons with the reference and with MACE (same structure,
        same supercell); returns the reference and MACE PhononDocs (references) and their keys."""
        ref_name = self.engine_name
        phonon_settings_ = stages.ref_phonons.settings()
        ref_docs: list = []
        mlip_docs: list = []
        phonon_keys: list[str] = []
        for mid, s in test:
            relaxations.add(mid, s, "holdout")
            r = relaxations.outputs[mid]
            structure = r.structure if r is not None else s
            enthalpy = r.enthalpy_per_atom if r is not None else (self.enthalpies or {}).get(mid)
            if ref_name == "vasp":
                ref = vasp_phonons(self.force_maker(), structure, mid, smats[mid], enthalpy, phonon_settings_, s,
                                   born_maker=self.born_maker)
            else:
                ref = stages.ref_phonons.make(structure, material_id=mid, supercell_matrix=smats[mid],
                                              enthalpy_per_atom=enthalpy)
            _, rkey = b.add(ref, "phonon-reference", mid, hashes[mid],
                            settings_hash(stages.ref_phonons, relaxations.keys[mid], smats[mid]), "cpu", "holdout",
                            name=f"phonons {ref_name} {mid}")
            ml = with_model(stages.mlip_phonons, model_sha256).make(
                structure, material_id=mid, supercell_matrix=smats[mid], enthalpy_per_atom=enthalpy
            )
            _, mkey = b.add(ml, "phonon-mlip", mid, hashes[mid],
                            settings_hash(stages.mlip_phonons, relaxations.keys[mid], smats[mid], tr_key), "gpu",
                            "holdout", name=f"phonons mace {mid}")
            ref_docs.append(ref.output)
            mlip_docs.append(ml.output)
            phonon_keys += [rkey, mkey]
        return ref_docs, mlip_docs, phonon_keys

    def _campaign_settings(self, stages: _StageMakers) -> dict[str, Any]:
        """The settings recorded in the CampaignDoc (and hashed into its key)."""
        return {
            "reference": {"engine": self.engine_name, "engine_kwargs": dict(self.engine_kwargs)},
            "relax": settings_payload(stages.relax),
            "perturbation": settings_payload(stages.perturbation),
            "labels": settings_payload(stages.force),
            "training": settings_payload(stages.training),
            "phonons": stages.ref_phonons.settings(),
            "mlip_engine_kwargs": dict(self.mlip_engine_kwargs),
            "benchmark": stages.benchmark_settings,
            "supercell_matrices": {k: _matrix(v) for k, v in (self.supercell_matrices or {}).items()},
            "enthalpies": dict(self.enthalpies or {}),
            "dft_training": self.dft_training,
        }


@dataclass
class _StageMakers:
    """The makers of a campaign's stages, made once per :meth:`TrainingCampaignMaker.make`."""

    relax: Maker | None
    force: Maker
    perturbation: PerturbationMaker
    training_set: TrainingSetMaker
    training: Maker
    ref_phonons: Maker
    mlip_phonons: Maker
    benchmark: Maker
    benchmark_settings: Any

    def engines(self) -> list[tuple[str, frozenset[str]]]:
        """(engine, elements it handles) of the relax and label makers, for the input checks."""
        return [e for e in (maker_engine_elements(self.relax), maker_engine_elements(self.force)) if e]


@dataclass
class _Relaxations:
    """The relax job of each material (output reference and key; None and ``"none"`` without
    relaxation), added to the campaign when the material's first stage needs it."""

    builder: CampaignBuilder
    maker: Maker | None
    hashes: dict[str, str]
    outputs: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def add(self, mid: str, s: Structure, split: str) -> None:
        if self.maker is None:
            self.outputs[mid] = None
            self.keys[mid] = "none"
            return
        r = self.maker.make(s, material_id=mid)
        _, key = self.builder.add(r, "relax", mid, self.hashes[mid], settings_hash(self.maker), "cpu", split,
                                  name=f"{getattr(self.maker, 'name', 'relax')} {mid}")
        self.outputs[mid] = r.output
        self.keys[mid] = key


def _matrix(m: Any) -> list[list[int]]:
    """A 3x3 integer supercell matrix from 3 or 9 numbers or a 3x3 list."""
    a = np.rint(np.asarray(m, dtype=float)).astype(int)
    return (np.diag(a) if a.shape == (3,) else a.reshape(3, 3)).tolist()


def split_materials(materials, held: list[str], failed: list) -> tuple[list, list]:
    """``(train, test)``: the held-out materials are the test set. Raises InputError when no
    training material is left; a held-out material with an element no training material has is
    recorded in ``failed`` and left out."""
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
    return train, kept_test


def holdout_supercells(test: list, phonon_maker: Maker, failed: list,
                       given: Mapping[str, Any] | None = None) -> dict[str, list[list[int]]]:
    """The phonon supercell matrix of each held-out material (both phonon calculations use it):
    the ``given`` one, else the window's choice; a material without one is recorded in ``failed``
    and removed from ``test``."""
    smats: dict[str, list[list[int]]] = {}
    for mid, s in list(test):
        if given and mid in given:
            smats[mid] = _matrix(given[mid])
            continue
        try:
            smats[mid] = supercell_for(s, phonon_maker, mid)
        except PhononFlowsError as err:
            failed.append(MaterialError(material_id=mid, stage="input", reason=err.reason))
            test.remove((mid, s))
    return smats
