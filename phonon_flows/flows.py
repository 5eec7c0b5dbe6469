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
    """(engine name, supported elements) of a reference maker; None for VASP or unknown makers."""
    if isinstance(maker, (ReferenceForceMaker, ReferenceRelaxMaker)):
        from phonon_flows.engines.reference import reference_engine_elements

        return maker.engine, reference_engine_elements(maker.engine)
    return None


def _unique(material_id: str, taken: set[str]) -> str:
    if material_id not in taken:
        return material_id
    k = 2
    while f"{material_id}-{k}" in taken:
        k += 1
    return f"{material_id}-{k}"


def prepare_materials(
    structures: Sequence[StructureInput] | Mapping[str, StructureInput],
    material_ids: Sequence[str] | None = None,
    *,
    min_distance: float = MIN_DISTANCE,
    engines: Sequence[tuple[str, frozenset[str]]] = (),
    perturbation_maker: PerturbationMaker | None = None,
) -> tuple[list[tuple[str, Structure]], list[MaterialError]]:
    """Read and check the inputs of a flow: ``[(material_id, structure)]`` of the good ones and a
    MaterialError (stage ``input``) naming each bad one and its problem.

    Inputs are Structures or structure files; ids come from ``material_ids``, the keys of a
    mapping, or :func:`~phonon_flows.core.structures.material_id_for` (the file name for a file
    that cannot be read). Checks: readable, ordered, no overlapping atoms, elements handled by
    each of ``engines``, and some supercell size in the perturbation maker's window.
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
            name = _unique(name, taken)
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
            name = _unique(err.material_id or name, taken)
            taken.add(name)
            bad.append(MaterialError(material_id=name, stage="input", reason=err.reason))
            continue
        taken.add(name)
        good.append((name, structure))
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
