"""Choice of the supercell: the smallest compact, symmetry-preserving supercell with ~100-200 atoms.

The recipe builds supercells of about 100-200 atoms from the relaxed cell, and a 4x4x4
supercell when the primitive cell has a single atom.

How the matrix is chosen (:func:`choose_supercell_matrix`):

1. Candidates: multiples ``k * I`` of the cell; diagonal multiples of the conventional standard
   cell (spglib's setting), also combined with the 45°/30°-rotated in-plane cells of square and
   hexagonal nets and the fcc/bcc-shaped cells of cubic lattices; these keep the crystal's
   point group when the lattice allows it (checked with spglib's rotations, as phonopy warns
   otherwise). As a fallback, for every size in the window, the integer matrix whose supercell
   is closest to a cube (ASE's :func:`~ase.build.supercells.find_optimal_cell_shape`).
2. Only sizes ``min_atoms <= N <= max_atoms`` are kept.
3. The smallest symmetry-preserving candidate that is compact (:func:`compactness` >=
   ``min_compactness``: no direction much shorter than the others) wins; else the smallest
   compact candidate of any kind; else the most compact one.
"""

from __future__ import annotations

import contextlib
import io
import itertools

import numpy as np
from pymatgen.core import Lattice, Structure

from phonon_flows.errors import InputError

#: the recipe's window of supercell sizes (atoms)
MIN_ATOMS = 100
MAX_ATOMS = 200
#: diagonal supercell used when the primitive cell has one atom
ONE_ATOM_SUPERCELL = (4, 4, 4)
#: supercells with compactness >= this are accepted (a cube scores 1, fcc/bcc-shaped cells 1.12/1.09)
MIN_COMPACTNESS = 0.9

# in-plane and centring shapes combined with diagonal multiples of the conventional cell
_SHAPES = (
    np.eye(3),
    np.array([[1, 1, 0], [-1, 1, 0], [0, 0, 1]]),  # sqrt2 x sqrt2 R45 (square nets)
    np.array([[1, 1, 0], [-1, 2, 0], [0, 0, 1]]),  # sqrt3 x sqrt3 R30 (hexagonal nets)
    np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]),  # fcc-shaped
    np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]]),  # bcc-shaped
)


def shortest_lattice_vector(lattice_matrix: np.ndarray) -> float:
    """Length (Å) of the shortest non-zero vector of the lattice (LLL basis, then all
    combinations with coefficients -1, 0, 1, which is exact in 3D for a reduced basis)."""
    reduced = Lattice(lattice_matrix).get_lll_reduced_lattice().matrix
    coeffs = np.array([c for c in itertools.product((-1, 0, 1), repeat=3) if any(c)])
    return float(np.linalg.norm(coeffs @ reduced, axis=1).min())


def compactness(lattice_matrix: np.ndarray) -> float:
    """How compact a periodic cell is: its shortest lattice vector (the distance to the nearest
    periodic image) divided by the edge of the cube of the same volume. A cube scores 1, fcc- and
    bcc-shaped cells 1.12 and 1.09 (images even farther), elongated or flat cells less than 1."""
    cell = np.asarray(lattice_matrix, dtype=float)
    volume = abs(np.linalg.det(cell))
    if volume < 1e-12:
        return 0.0
    return shortest_lattice_vector(cell) / float(np.cbrt(volume))


def supercell_sizes_in_window(n_atoms: int, min_atoms: int = MIN_ATOMS, max_atoms: int = MAX_ATOMS) -> list[int]:
    """Numbers of unit cells ``n`` with ``min_atoms <= n * n_atoms <= max_atoms``."""
    lo = max(1, -(-min_atoms // n_atoms))
    hi = max_atoms // n_atoms
    return list(range(lo, hi + 1))


def _symmetry(structure: Structure, symprec: float):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_dataset()
    except Exception:  # noqa: BLE001 - spglib failure: no symmetry information
        return None


def preserves_symmetry(supercell_matrix: np.ndarray, rotations: np.ndarray) -> bool:
    """Whether the supercell lattice (phonopy convention ``M``) is invariant under the unit cell's
    rotations (fractional, spglib's): ``M^-1 R M`` integer for every ``R``."""
    m = np.asarray(supercell_matrix, dtype=float)
    x = np.linalg.inv(m)[None] @ np.asarray(rotations, dtype=float) @ m[None]
    return bool(np.allclose(x, np.rint(x), atol=1e-6))


def _primitive_has_one_atom(structure: Structure) -> Structure | None:
    if len(structure) == 1:
        return structure
    if len(structure.composition.elements) != 1:
        return None
    prim = structure.get_primitive_structure()
    return prim if len(prim) == 1 else None


def _one_atom_matrix(structure: Structure, prim: Structure) -> np.ndarray | None:
    """Row-convention matrix (in the basis of ``structure``) giving 4x4x4 primitive cells."""
    n = np.array(ONE_ATOM_SUPERCELL)
    if prim is structure:
        return np.diag(n)
    target = np.diag(n) @ prim.lattice.matrix  # = P @ structure.lattice
    p = target @ np.linalg.inv(structure.lattice.matrix)
    p_int = np.rint(p)
    if np.allclose(p, p_int, atol=1e-3) and round(abs(np.linalg.det(p_int))) * len(structure) == np.prod(n):
        if np.linalg.det(p_int) < 0:
            p_int = -p_int
        return p_int.astype(int)
    return None


def _ase_near_cubic(cell: np.ndarray, n_cells: int) -> np.ndarray | None:
    from ase.build.supercells import find_optimal_cell_shape

    if n_cells == 1:
        return np.eye(3, dtype=int)
    for limit in (1, 2):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ase prints when a size has no solution
                p = find_optimal_cell_shape(cell, n_cells, "sc", lower_limit=-limit, upper_limit=limit)
        except Exception:  # noqa: BLE001 - no integer matrix of that determinant near the ideal one
            p = None
        if p is not None and round(abs(np.linalg.det(p))) == n_cells:
            return np.asarray(p, dtype=int)
    return None


def _symmetric_candidates(structure: Structure, dataset, min_atoms: int, max_atoms: int) -> list[np.ndarray]:
    """Row-convention integer matrices (supercell = P @ lattice) of the families in the module docstring."""
    n_atoms = len(structure)
    out: list[np.ndarray] = []
    k = 1
    while k**3 * n_atoms <= max_atoms:
        if k**3 * n_atoms >= min_atoms:
            out.append(k * np.eye(3, dtype=int))
        k += 1
    if dataset is None:
        return out
    # conventional cell (rows) = T @ input cell (rows), spglib: (a_s b_s c_s) = (a b c) P^-1
    t = np.linalg.inv(np.asarray(dataset.transformation_matrix, dtype=float)).T
    cells_per_conv = abs(np.linalg.det(t))
    for shape in _SHAPES:
        base = shape @ t
        per = cells_per_conv * abs(np.linalg.det(shape))
        kmax = int(max_atoms / (per * n_atoms)) + 1
        for a in range(1, kmax + 1):
            for b in range(1, kmax // a + 2):
                for c in range(1, kmax // (a * b) + 2):
                    size = a * b * c * per * n_atoms
                    if size > max_atoms + 1e-6 or size < min_atoms - 1e-6:
                        continue
                    p = np.diag([a, b, c]) @ base
                    if np.allclose(p, np.rint(p), atol=1e-4):
                        p = np.rint(p).astype(int)
                        if np.linalg.det(p) < 0:
                            p = -p
                        out.append(p)
    return out


def choose_supercell_matrix(
    structure: Structure,
    min_atoms: int = MIN_ATOMS,
    max_atoms: int = MAX_ATOMS,
    *,
    min_compactness: float = MIN_COMPACTNESS,
    symprec: float = 1e-3,
    material_id: str | None = None,
) -> np.ndarray:
    """The supercell matrix ``M`` (3x3 integers) of the smallest compact supercell with
    ``min_atoms <= N <= max_atoms`` atoms, keeping the crystal's symmetry when the window allows
    (see the module docstring).

    ``M`` follows phonopy's ``supercell_matrix`` convention, like atomate2's ``get_supercell_size``:
    the supercell's lattice vectors (columns) are ``lattice.T @ M``, i.e. (rows) ``M.T @ lattice``.
    Pass it as is to ``Phonopy(unitcell, supercell_matrix=M)``; :func:`make_supercell` builds the
    same supercell with pymatgen (which wants ``M.T``).

    A structure whose primitive cell has one atom gets 4x4x4 primitive cells (``diag(4, 4, 4)``
    for a one-atom input cell) whatever the window, as in the recipe. A unit cell of more than
    ``max_atoms`` atoms is used as it is (identity matrix), as in the paper. Raises
    :class:`InputError` naming the material when no supercell size falls in the window.
    """
    name = material_id or structure.composition.reduced_formula
    if min_atoms < 1 or max_atoms < min_atoms:
        raise InputError(
            f"invalid supercell window: min_atoms={min_atoms}, max_atoms={max_atoms}", material_id=name, stage="perturb"
        )
    prim = _primitive_has_one_atom(structure)
    if prim is not None:
        p = _one_atom_matrix(structure, prim)
        if p is not None:
            return p.T.copy()

    n_atoms = len(structure)
    if n_atoms > max_atoms:
        # the paper uses a cell of more than max_atoms atoms as it is (1x1x1)
        return np.eye(3, dtype=int)
    sizes = supercell_sizes_in_window(n_atoms, min_atoms, max_atoms)
    if not sizes:
        raise InputError(
            f"no supercell of this {n_atoms}-atom cell has between {min_atoms} and {max_atoms} atoms "
            "(widen the supercell window)",
            material_id=name,
            stage="perturb",
        )
    cell = structure.lattice.matrix
    dataset = _symmetry(structure, symprec)
    rotations = None if dataset is None else np.asarray(dataset.rotations)

    def score(p: np.ndarray) -> float:
        return compactness(p @ cell)

    def size(p: np.ndarray) -> int:
        return round(abs(np.linalg.det(p))) * n_atoms

    symmetric = [
        p for p in _symmetric_candidates(structure, dataset, min_atoms, max_atoms)
        if rotations is None or preserves_symmetry(p.T, rotations)
    ]
    ranked = sorted(((size(p), -score(p), i, p) for i, p in enumerate(symmetric)), key=lambda t: t[:3])
    for _n, neg_score, _i, p in ranked:
        if -neg_score >= min_compactness:
            return p.T.copy()

    fallback: list[tuple[int, float, int, np.ndarray]] = [(n, -s, i, p) for n, s, i, p in ranked]
    for n_cells in sizes:
        p = _ase_near_cubic(cell, n_cells)
        if p is None:
            continue
        s = score(p)
        if s >= min_compactness:
            return p.T.copy()
        fallback.append((size(p), s, len(fallback), p))
    if not fallback:  # pragma: no cover - find_optimal_cell_shape always finds some matrix
        raise InputError(
            f"no integer supercell matrix found for {sizes[0]}-{sizes[-1]} unit cells", material_id=name, stage="perturb"
        )
    best = max(fallback, key=lambda t: (round(t[1], 9), -t[0]))  # most compact, then smallest
    return best[3].T.copy()


def make_supercell(structure: Structure, supercell_matrix: np.ndarray) -> Structure:
    """The supercell of ``structure`` for a phonopy-convention ``supercell_matrix`` (see
    :func:`choose_supercell_matrix`): a new structure, atoms in pymatgen's order (not phonopy's)."""
    m = np.asarray(supercell_matrix, dtype=int)
    if m.shape == (3,):
        m = np.diag(m)
    return structure.make_supercell(m.T, in_place=False)
