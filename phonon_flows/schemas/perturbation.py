"""PerturbationDoc: the supercell of one material and its randomly perturbed copies.

The perturbed structures and the displacement arrays are large: jobs put the fields named in
:data:`PERTURBATION_DATA_FIELDS` into the jobflow ``data`` store.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pymatgen.core import Structure

#: PerturbationDoc fields that jobs put in the "data" additional store
PERTURBATION_DATA_FIELDS = ("structures", "displacements")


class DisplacementStatistics(BaseModel):
    """Lengths of the random displacements over all atoms of all perturbed supercells."""

    n_structures: int = Field(description="Number of perturbed supercells")
    n_atoms: int = Field(description="Atoms per supercell")
    n_atoms_moved: int = Field(description="Atoms displaced (by more than 1e-8 Å), over all supercells")
    min: float = Field(description="Shortest displacement, Å")
    max: float = Field(description="Longest displacement, Å")
    mean: float = Field(description="Mean displacement length, Å")
    std: float = Field(description="Standard deviation of the displacement lengths, Å")


class PerturbationDoc(BaseModel):
    """Randomly perturbed supercells of one material (every atom displaced, seeded)."""

    material_id: str = Field(description="The material's id in the campaign")
    formula: str = Field(description="Reduced formula")
    structure: Structure = Field(description="Unit cell the supercell is built from (relaxed cell)")
    supercell_matrix: list[list[int]] = Field(
        description="Supercell matrix in phonopy's convention (as atomate2): supercell lattice rows = M^T @ unit-cell rows"
    )
    n_atoms_supercell: int = Field(description="Atoms in the supercell")
    supercell: Structure = Field(description="The unperturbed supercell")
    structures: list[Structure] = Field(description="The perturbed supercells (data store)")
    displacements: list[list[list[float]]] = Field(
        description="Cartesian displacements (n_structures, n_atoms, 3) from the supercell, Å (data store)"
    )
    seed: int = Field(description="Seed of numpy's default_rng that drew the displacements")
    base_seed: int | None = Field(default=None, description="Campaign seed the material's seed was derived from")
    min_displacement: float = Field(description="Lower bound of the displacement length, Å")
    max_displacement: float = Field(description="Upper bound of the displacement length, Å")
    statistics: DisplacementStatistics = Field(description="Statistics of the displacement lengths")
    min_atoms: int | None = Field(default=None, description="Lower end of the supercell-size window, atoms")
    max_atoms: int | None = Field(default=None, description="Upper end of the supercell-size window, atoms")
    compactness: float | None = Field(
        default=None,
        description="Distance to the nearest periodic image of the supercell over the edge of the cube of equal volume (1 = cube)",
    )
