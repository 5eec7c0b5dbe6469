"""Labelling and relaxation with a reference engine (CHGNet 0.3.0 by default, ASE EMT for tests),
for machines without DFT. Same contracts as the VASP makers: ForceDoc / RelaxDoc, and every
document names the engine (``engine.kind == "reference"``: a stand-in for DFT, not DFT)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress
from jobflow import Maker, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from phonon_flows import engines  # engines.get_engine is looked up when a job runs (tests replace it)
from phonon_flows.core.structures import material_id_for, validate_structure
from phonon_flows.engines.reference import get_reference_engine, relax_structure
from phonon_flows.errors import PhononFlowsError
from phonon_flows.makers.perturb import as_structure
from phonon_flows.schemas.forces import FORCE_DATA_FIELDS, ForceDoc, RelaxDoc


def _name(structure: Any, material_id: str | None) -> str:
    if material_id:
        return material_id
    formula = getattr(getattr(structure, "composition", None), "reduced_formula", None)
    return formula or "unknown material"


def label_structures(
    engine, structures: Sequence[Structure], material_id: str, perturbation_indices: Sequence[int | None] | None = None
) -> list[ForceDoc]:
    """ForceDocs of ``structures`` computed by ``engine`` in one batch."""
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]
    results = engine.compute(atoms, material_id=material_id)
    info = engine.info
    indices = list(perturbation_indices) if perturbation_indices is not None else [None] * len(structures)
    docs = []
    for structure, res, index in zip(structures, results, indices, strict=True):
        n = len(structure)
        forces = np.asarray(res.forces, dtype=float)
        docs.append(
            ForceDoc(
                material_id=material_id,
                formula=structure.composition.reduced_formula,
                structure=structure,
                n_atoms=n,
                energy=float(res.energy),
                energy_per_atom=float(res.energy) / n,
                forces=forces.tolist(),
                stress=None if res.stress is None else voigt_6_to_full_3x3_stress(np.asarray(res.stress)).tolist(),
                max_force=float(np.linalg.norm(forces, axis=1).max()),
                engine=info,
                perturbation_index=index,
            )
        )
    return docs


@dataclass
class ReferenceForceMaker(Maker):
    """Energy, forces and stress of a structure (or of a list, batched) with a reference engine.

    ``engine``: ``"chgnet"`` (CHGNet 0.3.0, default) or ``"emt"``; ``engine_kwargs`` go to the
    engine (e.g. ``{"device": "cuda", "batch_size": 32}`` for CHGNet).
    """

    name: str = "reference forces"
    engine: str = "chgnet"
    engine_kwargs: dict = field(default_factory=dict)

    @job(data=list(FORCE_DATA_FIELDS))
    def make(
        self,
        structure: Structure | Sequence[Structure],
        material_id: str | None = None,
        perturbation_index: int | Sequence[int] | None = None,
    ) -> ForceDoc | list[ForceDoc]:
        """A ForceDoc for one structure; a list of ForceDocs (one batch) for a list of structures,
        numbered ``perturbation_index`` (default 0, 1, ...)."""
        return self.label(structure, material_id, perturbation_index)

    def label(self, structure, material_id=None, perturbation_index=None):
        """The work of :meth:`make`, without jobflow."""
        single = not isinstance(structure, (list, tuple))
        structures = [as_structure(s) for s in ([structure] if single else structure)]
        name = _name(structures[0] if structures else None, material_id)
        try:
            for s in structures:
                validate_structure(s, name)
            material_id = material_id or material_id_for(structures[0])
            if single:
                indices = [perturbation_index]
            elif perturbation_index is None:
                indices = list(range(len(structures)))
            else:
                indices = list(perturbation_index)
            engine = get_reference_engine(self.engine, **self.engine_kwargs)
            docs = label_structures(engine, structures, material_id, indices)
        except PhononFlowsError as err:
            raise err.with_material(name, "label") from err
        return docs[0] if single else docs


def _relax_engine(name: str, kwargs: dict):
    """A reference engine, or a trained MLIP (``"mace"``: a screening relaxes with its model; the
    model is fetched from the running job's store when the job exposes it)."""
    if name.lower() not in engines.MLIP_ENGINES:
        return get_reference_engine(name, **kwargs)
    kwargs = dict(kwargs)
    if "model_path" not in kwargs and "store" not in kwargs:
        from jobflow import CURRENT_JOB

        if getattr(CURRENT_JOB, "store", None) is not None:
            kwargs["store"] = CURRENT_JOB.store
    return engines.get_engine(name, **kwargs)


logger = logging.getLogger(__name__)

#: a relaxation changing the volume by more than this (relative) is reported
VOLUME_CHANGE_WARNING = 0.03


@dataclass
class ReferenceRelaxMaker(Maker):
    """Relax positions and cell with a reference engine (ASE FrechetCellFilter + FIRE by default,
    symmetry kept) -> RelaxDoc with the enthalpy per atom. ``fmax`` in eV/Å (the recipe's 1e-3)."""

    name: str = "reference relax"
    engine: str = "chgnet"
    engine_kwargs: dict = field(default_factory=dict)
    fmax: float = 1e-3
    steps: int = 1000
    optimizer: str = "FIRE"
    relax_cell: bool = True
    fix_symmetry: bool = True
    pressure: float = 0.0

    @job(output_schema=RelaxDoc)
    def make(self, structure: Structure, material_id: str | None = None) -> RelaxDoc:
        """Relaxed ``structure`` and its energy and enthalpy per atom (eV/atom)."""
        return self.relax(structure, material_id)

    def relax(self, structure: Structure, material_id: str | None = None) -> RelaxDoc:
        """The work of :meth:`make`, without jobflow."""
        structure = as_structure(structure)
        name = _name(structure, material_id)
        try:
            validate_structure(structure, name)
            material_id = material_id or material_id_for(structure)
            engine = _relax_engine(self.engine, self.engine_kwargs)
            res = relax_structure(
                structure, engine, fmax=self.fmax, steps=self.steps, optimizer=self.optimizer,
                relax_cell=self.relax_cell, fix_symmetry=self.fix_symmetry, pressure=self.pressure,
                material_id=material_id,
            )
            validate_structure(res.structure, material_id)
        except PhononFlowsError as err:
            raise err.with_material(name, "relax") from err
        info = engine.info
        info.settings.update({"relax": {"fmax": self.fmax, "optimizer": self.optimizer, "steps": self.steps,
                                        "relax_cell": self.relax_cell, "fix_symmetry": self.fix_symmetry}})
        volume_change = res.structure.volume / structure.volume - 1.0
        warnings = []
        if abs(volume_change) > VOLUME_CHANGE_WARNING:
            warnings.append(
                f"{material_id}: the {info.name} relaxation changed the volume by {100 * volume_change:+.1f} % "
                f"({structure.volume / len(structure):.2f} -> {res.structure.volume / len(res.structure):.2f} Å^3/atom)")
            logger.warning(warnings[-1])
        return RelaxDoc(
            warnings=warnings,
            material_id=material_id,
            formula=structure.composition.reduced_formula,
            input_structure=structure,
            structure=res.structure,
            energy_per_atom=res.energy_per_atom,
            enthalpy_per_atom=res.enthalpy_per_atom,
            pressure=res.pressure,
            converged=res.converged,
            fmax=self.fmax,
            max_force=res.max_force,
            n_steps=res.n_steps,
            volume_change=volume_change,
            engine=info,
        )
