"""PerturbationMaker: relaxed structure -> PerturbationDoc (supercell matrix + perturbed supercells)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from jobflow import Maker, job
from pymatgen.core import Structure

from phonon_flows.core.perturb import (
    DEFAULT_SEED,
    MAX_DISPLACEMENT,
    MIN_DISPLACEMENT,
    N_STRUCTURES,
    derive_seed,
    perturb_supercell,
)
from phonon_flows.core.structures import MIN_DISTANCE, material_id_for, primitive_cell, validate_structure
from phonon_flows.core.supercells import (
    MAX_ATOMS,
    MIN_ATOMS,
    MIN_COMPACTNESS,
    choose_supercell_matrix,
    compactness,
    make_supercell,
)
from phonon_flows.errors import PhononFlowsError
from phonon_flows.schemas.perturbation import PERTURBATION_DATA_FIELDS, DisplacementStatistics, PerturbationDoc


def as_structure(obj: Any) -> Structure:
    """A Structure from a Structure, its dict, or a document with a ``structure`` (e.g. RelaxDoc)."""
    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, Mapping):
        if "lattice" in obj and "sites" in obj:
            return Structure.from_dict(obj)
        if "structure" in obj:
            return as_structure(obj["structure"])
    if hasattr(obj, "structure"):
        return as_structure(obj.structure)
    return obj  # validate_structure names what is wrong


@dataclass
class PerturbationMaker(Maker):
    """Supercell of ~100-200 atoms (4x4x4 for one-atom primitive cells), then ``n_structures``
    copies with **every** atom displaced randomly by 0.01-0.05 Å (seeded, reproducible).

    ``seed`` is the campaign seed; with ``seed_per_material`` (default) each material draws from
    its own stream derived from (seed, material_id), so materials do not share displacement
    patterns; the seed actually used is recorded in the document.
    ``supercell_matrix`` (phonopy convention) overrides the automatic choice. ``use_primitive``
    reduces the input to its primitive cell first.
    """

    name: str = "perturb"
    n_structures: int = N_STRUCTURES
    min_displacement: float = MIN_DISPLACEMENT
    max_displacement: float = MAX_DISPLACEMENT
    seed: int = DEFAULT_SEED
    seed_per_material: bool = True
    min_atoms: int = MIN_ATOMS
    max_atoms: int = MAX_ATOMS
    min_compactness: float = MIN_COMPACTNESS
    supercell_matrix: list[list[int]] | None = None
    use_primitive: bool = True
    min_distance: float = MIN_DISTANCE

    @job(data=list(PERTURBATION_DATA_FIELDS), output_schema=PerturbationDoc)
    def make(self, structure: Structure, material_id: str | None = None) -> PerturbationDoc:
        """Perturbed supercells of ``structure`` (a Structure or a RelaxDoc)."""
        return self.perturb(structure, material_id)

    def perturb(self, structure: Structure, material_id: str | None = None) -> PerturbationDoc:
        """The work of :meth:`make`, without jobflow."""
        structure = as_structure(structure)
        try:
            validate_structure(structure, material_id, min_distance=self.min_distance)
            material_id = material_id or material_id_for(structure)
            unit = primitive_cell(structure) if self.use_primitive else structure
            if self.supercell_matrix is not None:
                matrix = np.asarray(self.supercell_matrix, dtype=int)
                if matrix.shape == (3,):
                    matrix = np.diag(matrix)
            else:
                matrix = choose_supercell_matrix(
                    unit, self.min_atoms, self.max_atoms, min_compactness=self.min_compactness, material_id=material_id
                )
            supercell = make_supercell(unit, matrix)
            seed = derive_seed(self.seed, material_id) if self.seed_per_material else int(self.seed)
            result = perturb_supercell(
                supercell, self.n_structures, self.min_displacement, self.max_displacement, seed=seed,
                material_id=material_id,
            )
        except PhononFlowsError as err:
            formula = getattr(getattr(structure, "composition", None), "reduced_formula", None)
            raise err.with_material(material_id or formula or "unknown material", "perturb") from err
        return PerturbationDoc(
            material_id=material_id,
            formula=structure.composition.reduced_formula,
            structure=unit,
            supercell_matrix=matrix.tolist(),
            n_atoms_supercell=len(supercell),
            supercell=supercell,
            structures=result.structures,
            displacements=result.displacements.tolist(),
            seed=result.seed,
            base_seed=int(self.seed),
            min_displacement=result.min_displacement,
            max_displacement=result.max_displacement,
            statistics=DisplacementStatistics(**result.statistics.as_dict()),
            min_atoms=self.min_atoms,
            max_atoms=self.max_atoms,
            compactness=compactness(supercell.lattice.matrix),
        )
