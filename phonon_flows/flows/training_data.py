"""TrainingDataMaker: structures -> (relax) -> perturb -> label (reference engine or VASP)
-> training set (TrainingSetDoc with the extxyz for MACE).

A material whose input is bad is recorded with the reason when the flow is made and gets no
jobs; a material whose job fails while the flow runs is recorded by the collecting job (which
runs with ``on_missing_references = NONE``). Neither stops the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobflow import Flow, Maker

from phonon_flows.core.structures import MIN_DISTANCE
from phonon_flows.flows.inputs import StructureInput, maker_engine_elements, prepare_materials
from phonon_flows.makers.base import set_category
from phonon_flows.makers.perturb import PerturbationMaker
from phonon_flows.makers.reference import ReferenceForceMaker, ReferenceRelaxMaker
from phonon_flows.makers.training_set import TrainingSetMaker


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
    def with_reference(cls, engine: str, relax: bool = True, engine_kwargs: dict | None = None,
                       **kwargs: Any) -> TrainingDataMaker:
        """Relax (optionally) and label with a reference engine (``chgnet`` or ``emt``)."""
        kw = dict(engine=engine, engine_kwargs=dict(engine_kwargs or {}))
        return cls(
            relax_maker=ReferenceRelaxMaker(**kw) if relax else None,
            force_maker=ReferenceForceMaker(**kw),
            **kwargs,
        )

    @classmethod
    def with_vasp(cls, relax: bool = True, engine_kwargs: dict | None = None, relax_kwargs: dict | None = None,
                  **kwargs: Any) -> TrainingDataMaker:
        """Relax (optionally) and label with VASP, the recipe's settings, through atomate2.

        ``engine_kwargs``: VASP options of every job (``user_incar_settings``, ``run_vasp_kwargs``,
        ...; ``static_maker=`` for the single points); ``relax_kwargs``: those of the relaxations
        (``relax_maker=``, ``n_relaxations``), on top of the input-set options of ``engine_kwargs``."""
        from phonon_flows.makers.vasp import (  # atomate2's VASP: heavy, optional
            VaspForceMaker,
            VaspRelaxMaker,
            relax_options,
        )

        engine_kwargs = dict(engine_kwargs or {})
        options = relax_options(engine_kwargs, dict(relax_kwargs or {}))
        relax_maker = VaspRelaxMaker.with_settings(**options) if relax else None
        return cls(relax_maker=relax_maker, force_maker=VaspForceMaker.with_settings(**engine_kwargs), **kwargs)

    def make(
        self,
        structures: Sequence[StructureInput] | Mapping[str, StructureInput],
        material_ids: Sequence[str] | None = None,
    ) -> Flow:
        """The flow for ``structures`` (Structures or files; a mapping gives the ids). Its output
        is the TrainingSetDoc."""
        engines = [e for e in (maker_engine_elements(self.relax_maker), maker_engine_elements(self.force_maker)) if e]
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
