"""Random perturbation of supercells, as in the recipe: **every** atom is displaced in a direction
drawn uniformly on the unit sphere, by a length drawn uniformly in ``[min, max]`` Å (0.01-0.05 Å),
from a seeded :class:`numpy.random.Generator` (same input and seed -> same structures)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from pymatgen.core import Structure

from phonon_flows.errors import InputError

N_STRUCTURES = 6
MIN_DISPLACEMENT = 0.01  # Å
MAX_DISPLACEMENT = 0.05  # Å
DEFAULT_SEED = 123


@dataclass
class DisplacementStatistics:
    """Statistics of the displacement lengths (Å) over all atoms of all perturbed structures."""

    n_structures: int
    n_atoms: int  # atoms per structure
    n_atoms_moved: int  # over all structures: displacements longer than 1e-8 Å
    min: float
    max: float
    mean: float
    std: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Perturbation:
    """Perturbed structures, their displacements ``(n_structures, n_atoms, 3)`` in Å, and statistics."""

    structures: list[Structure]
    displacements: np.ndarray
    statistics: DisplacementStatistics
    seed: int
    min_displacement: float
    max_displacement: float
    lengths: np.ndarray = field(repr=False, default=None)


def random_displacements(
    n_atoms: int,
    rng: np.random.Generator,
    min_displacement: float = MIN_DISPLACEMENT,
    max_displacement: float = MAX_DISPLACEMENT,
) -> np.ndarray:
    """``(n_atoms, 3)`` displacements: directions uniform on the sphere (normalised Gaussian
    vectors), lengths uniform in ``[min_displacement, max_displacement]`` Å."""
    directions = rng.standard_normal((n_atoms, 3))
    norms = np.linalg.norm(directions, axis=1)
    while np.any(norms < 1e-12):  # pragma: no cover - probability zero
        bad = norms < 1e-12
        directions[bad] = rng.standard_normal((int(bad.sum()), 3))
        norms = np.linalg.norm(directions, axis=1)
    lengths = rng.uniform(min_displacement, max_displacement, size=n_atoms)
    return directions / norms[:, None] * lengths[:, None]


def displacement_statistics(displacements: np.ndarray) -> DisplacementStatistics:
    """Statistics of ``(n_structures, n_atoms, 3)`` displacements (Å)."""
    disp = np.asarray(displacements, dtype=float)
    lengths = np.linalg.norm(disp, axis=-1)
    return DisplacementStatistics(
        n_structures=int(disp.shape[0]),
        n_atoms=int(disp.shape[1]),
        n_atoms_moved=int(np.count_nonzero(lengths > 1e-8)),
        min=float(lengths.min()),
        max=float(lengths.max()),
        mean=float(lengths.mean()),
        std=float(lengths.std()),
    )


def displacements_between(reference: Structure, perturbed: Structure) -> np.ndarray:
    """Cartesian displacements (Å) of ``perturbed`` from ``reference`` (same lattice and order),
    with the minimum-image convention."""
    dfrac = perturbed.frac_coords - reference.frac_coords
    dfrac -= np.rint(dfrac)
    return dfrac @ reference.lattice.matrix


def derive_seed(seed: int, key: str) -> int:
    """A reproducible 32-bit seed for one material from a base ``seed`` and a key (its id), so
    that materials of the same size do not share the same displacement pattern."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def perturb_supercell(
    supercell: Structure,
    n_structures: int = N_STRUCTURES,
    min_displacement: float = MIN_DISPLACEMENT,
    max_displacement: float = MAX_DISPLACEMENT,
    seed: int = DEFAULT_SEED,
    material_id: str | None = None,
) -> Perturbation:
    """``n_structures`` copies of ``supercell`` with every atom displaced (see module docstring).

    Positions are not wrapped back into the cell, so ``perturbed - supercell`` is exactly the
    displacement. Site properties (e.g. magnetic moments) are kept.
    """
    name = material_id or supercell.composition.reduced_formula
    if n_structures < 1:
        raise InputError(f"n_structures must be >= 1, got {n_structures}", material_id=name, stage="perturb")
    if not (0 < min_displacement <= max_displacement):
        raise InputError(
            f"displacement bounds must satisfy 0 < min <= max, got [{min_displacement}, {max_displacement}] Å",
            material_id=name,
            stage="perturb",
        )
    rng = np.random.default_rng(seed)
    n_atoms = len(supercell)
    cart = supercell.cart_coords
    structures: list[Structure] = []
    all_disp = np.empty((n_structures, n_atoms, 3))
    for k in range(n_structures):
        disp = random_displacements(n_atoms, rng, min_displacement, max_displacement)
        all_disp[k] = disp
        structures.append(
            Structure(
                supercell.lattice,
                supercell.species,
                cart + disp,
                coords_are_cartesian=True,
                to_unit_cell=False,
                site_properties=supercell.site_properties or None,
            )
        )
    stats = displacement_statistics(all_disp)
    return Perturbation(
        structures=structures,
        displacements=all_disp,
        statistics=stats,
        seed=int(seed),
        min_displacement=float(min_displacement),
        max_displacement=float(max_displacement),
        lengths=np.linalg.norm(all_disp, axis=-1),
    )
