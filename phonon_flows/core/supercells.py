"""Choice of the supercell: the smallest near-cubic supercell with ~100-200 atoms.

The recipe builds supercells of about 100-200 atoms from the relaxed cell, and a 4x4x4
supercell when the primitive cell has a single atom. For each admissible size (number of
unit cells ``n`` with ``min_atoms <= n * n_atoms <= max_atoms``, smallest first) ASE's
:func:`ase.build.supercells.find_optimal_cell_shape` gives the integer matrix whose supercell is
closest to a cube; the first one that is near-cubic (:func:`cubic_score` >= ``min_cubic_score``)
is taken, else the most cubic of the window.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pymatgen.core import Structure

from phonon_flows.errors import InputError

#: the recipe's window of supercell sizes (atoms)
MIN_ATOMS = 100
MAX_ATOMS = 200
#: diagonal supercell used when the primitive cell has one atom
ONE_ATOM_SUPERCELL = (4, 4, 4)
#: supercells whose cubic score reaches this are "near-cubic" (a cube scores 1, an fcc-shaped cell 0.92)
MIN_CUBIC_SCORE = 0.9


def cubic_score(lattice_matrix: np.ndarray) -> float:
    """How cubic a cell is: the smallest distance between opposite faces divided by the edge of
    the cube of the same volume. 1 for a cube, smaller for any other shape (0.92 for an
    fcc-shaped rhombohedral cell, -> 0 for a flat one). It is the fraction of the cube's
    inscribed sphere that fits in the cell, i.e. how far interactions reach before meeting an image."""
    cell = np.asarray(lattice_matrix, dtype=float)
    volume = abs(np.linalg.det(cell))
    if volume < 1e-12:
        return 0.0
    heights = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return float(min(heights) / np.cbrt(volume))


def supercell_sizes_in_window(n_atoms: int, min_atoms: int = MIN_ATOMS, max_atoms: int = MAX_ATOMS) -> list[int]:
    """Numbers of unit cells ``n`` with ``min_atoms <= n * n_atoms <= max_atoms``."""
    lo = max(1, -(-min_atoms // n_atoms))
    hi = max_atoms // n_atoms
    return list(range(lo, hi + 1))


def _primitive_has_one_atom(structure: Structure) -> Structure | None:
    if len(structure) == 1:
        return structure
    if len(structure.composition.elements) != 1:
        return None
    prim = structure.get_primitive_structure()
    return prim if len(prim) == 1 else None


def _one_atom_matrix(structure: Structure, prim: Structure) -> np.ndarray | None:
    """Matrix (in the basis of ``structure``) giving 4x4x4 primitive cells, when it is integer."""
    n = np.array(ONE_ATOM_SUPERCELL)
    if prim is structure:
        return np.diag(n)
    # supercell lattice = diag(4) @ prim.lattice = M @ structure.lattice
    target = np.diag(n) @ prim.lattice.matrix
    m = target @ np.linalg.inv(structure.lattice.matrix)
    m_int = np.rint(m)
    if np.allclose(m, m_int, atol=1e-3) and round(abs(np.linalg.det(m_int))) == np.prod(n) // len(structure):
        if np.linalg.det(m_int) < 0:
            m_int = -m_int
        return m_int.astype(int)
    return None


def _best_shape_for_size(cell: np.ndarray, n_cells: int) -> np.ndarray | None:
    from ase.build.supercells import find_optimal_cell_shape

    if n_cells == 1:
        return np.eye(3, dtype=int)
    best = None
    for limit in (1, 2):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ase prints when a size has no solution
                p = find_optimal_cell_shape(cell, n_cells, "sc", lower_limit=-limit, upper_limit=limit)
        except Exception:  # noqa: BLE001 - no integer matrix of that determinant near the ideal one
            p = None
        if p is not None and round(abs(np.linalg.det(p))) == n_cells:
            best = np.asarray(p, dtype=int)
            break
    return best


def choose_supercell_matrix(
    structure: Structure,
    min_atoms: int = MIN_ATOMS,
    max_atoms: int = MAX_ATOMS,
    *,
    min_cubic_score: float = MIN_CUBIC_SCORE,
    material_id: str | None = None,
) -> np.ndarray:
    """The supercell matrix ``M`` (3x3 integers) of the smallest near-cubic supercell with
    ``min_atoms <= N <= max_atoms`` atoms.

    ``M`` follows phonopy's ``supercell_matrix`` convention, like atomate2's ``get_supercell_size``:
    the supercell's lattice vectors (columns) are ``lattice.T @ M``, i.e. (rows) ``M.T @ lattice``.
    Pass it as is to ``Phonopy(unitcell, supercell_matrix=M)``; :func:`make_supercell` builds the
    same supercell with pymatgen (which wants ``M.T``).

    A structure whose primitive cell has one atom gets 4x4x4 primitive cells (``diag(4, 4, 4)``
    for a one-atom input cell) whatever the window, as in the recipe. Raises :class:`InputError`
    naming the material when no supercell size falls in the window.
    """
    name = material_id or structure.composition.reduced_formula
    if min_atoms < 1 or max_atoms < min_atoms:
        raise InputError(
            f"invalid supercell window: min_atoms={min_atoms}, max_atoms={max_atoms}", material_id=name, stage="perturb"
        )
    prim = _primitive_has_one_atom(structure)
    if prim is not None:
        m = _one_atom_matrix(structure, prim)
        if m is not None:
            return m.T.copy()

    n_atoms = len(structure)
    sizes = supercell_sizes_in_window(n_atoms, min_atoms, max_atoms)
    if not sizes:
        raise InputError(
            f"no supercell of this {n_atoms}-atom cell has between {min_atoms} and {max_atoms} atoms "
            "(widen the supercell window)",
            material_id=name,
            stage="perturb",
        )
    cell = structure.lattice.matrix
    candidates: list[tuple[float, int, np.ndarray]] = []
    for n in sizes:
        p = _best_shape_for_size(cell, n)
        if p is None:
            continue
        score = cubic_score(p @ cell)
        if score >= min_cubic_score:
            return p.T.copy()
        candidates.append((score, n, p))
    if not candidates:  # pragma: no cover - find_optimal_cell_shape always finds some matrix
        raise InputError(
            f"no integer supercell matrix found for sizes {sizes[0]}-{sizes[-1]} unit cells", material_id=name,
            stage="perturb",
        )
    best_score = max(c[0] for c in candidates)
    # most cubic of the window; among equally cubic ones the smallest
    return next(p for score, _n, p in candidates if score >= best_score - 1e-9).T.copy()


def make_supercell(structure: Structure, supercell_matrix: np.ndarray) -> Structure:
    """The supercell of ``structure`` for a phonopy-convention ``supercell_matrix`` (see
    :func:`choose_supercell_matrix`): a new structure, atoms in pymatgen's order (not phonopy's)."""
    m = np.asarray(supercell_matrix, dtype=int)
    if m.shape == (3,):
        m = np.diag(m)
    return structure.make_supercell(m.T, in_place=False)
