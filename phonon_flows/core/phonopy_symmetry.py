"""phonopy's supercell symmetry setup, vectorised: the same numbers in a fraction of the time.

A ``Phonopy`` object finds the space group of its supercell and, for every operation, the
permutation of the atoms it makes (``Symmetry.atomic_permutations``, used by the force
constants). A supercell of N primitive cells has N times the point group's operations (3,072
for a 128-atom rock-salt supercell), and phonopy 4.10 matches the atoms one operation at a time
in a Python loop (``phonopy.structure.cells.compute_all_sg_permutations``, ~0.1 ms each), then
removes duplicate rotations (``collect_unique_rotations``) and finds each displaced atom's site
symmetry (``Symmetry._get_site_symmetry``) in Python loops over all operations too: ~60 % of a
screening's phonopy work before the forces.

Here the same results come from a few array operations:

- permutations: the operations are grouped by rotation; the others of a rotation differ from
  its first one by a pure translation, so only the first operation of each rotation and each
  distinct pure translation are matched, with a periodic k-d tree on the fractional coordinates
  (scipy ``cKDTree``, ``boxsize=1``), and every operation's permutation is the composition of
  two (48 + 32 matchings instead of 1,536 for a 64-atom rock-salt supercell). The partners are
  checked against phonopy's own criterion: the same type, a bijection, and a Cartesian
  distance (minimum image, as phonopy measures it) below ``0.9 symprec`` for every atom; a
  composed permutation passes when the sum of its two parts' largest distances does (the
  triangle inequality), else its own distances are measured. No two atoms of the cell may lie
  within ``4 symprec`` of each other, so the partner found is the only one phonopy could find
  (it searches within up to 2.5 ``symprec``). An operation that fails a check is matched by
  phonopy's own ``compute_permutation_for_rotation``; a cell with atoms that close, by phonopy's
  own ``compute_all_sg_permutations``.
- unique rotations: ``numpy.unique`` on the flattened matrices, first occurrences in input order.
- site symmetry: phonopy's distance test for all operations at once; a distance between 0.9 and
  2 ``symprec`` (where rounding could decide) sends the atom to phonopy's own loop.
- the Cartesian rotations of the force constants (``similarity_transformation``, asked once per
  operation): phonopy's own result, remembered per distinct rotation while the block runs.

:func:`fast_phonopy_symmetry` installs these in phonopy's modules only while its block runs (the
package's own Phonopy constructions, displacements and force constants use it); outside it,
phonopy is untouched. ``tests/test_phonopy_symmetry.py`` checks that permutations, site
symmetries, displacements and force constants equal phonopy's bit for bit on real cells.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import phonopy.harmonic.force_constants as _force_constants
import phonopy.structure.cells as _cells
import phonopy.structure.symmetry as _symmetry
from scipy.spatial import cKDTree

#: phonopy's own functions (the fallback, and what is restored after the block)
_PHONOPY_ALL_PERMUTATIONS = _cells.compute_all_sg_permutations
_PHONOPY_UNIQUE_ROTATIONS = _symmetry.collect_unique_rotations
_PHONOPY_SITE_SYMMETRY = _symmetry.Symmetry._get_site_symmetry
_PHONOPY_SIMILARITY = _force_constants.similarity_transformation

#: partners are accepted below this fraction of symprec (a margin for rounding)
ACCEPT_FRACTION = 0.9
#: atoms of one cell closer than this many symprec: phonopy's own function for the whole cell
UNIQUE_FACTOR = 4.0
#: operations x atoms per block of the vectorised checks (bounds the memory: ~100 MB)
_BLOCK = 1 << 19

#: how often each path ran (the tests check that the fast path is what runs)
counters: dict[str, int] = {"fast_operations": 0, "fallback_operations": 0, "fallback_cells": 0,
                            "fast_site_symmetry": 0, "fallback_site_symmetry": 0}


def _wrap(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates in [0, 1) (as a periodic k-d tree with ``boxsize=1`` needs)."""
    out = frac - np.floor(frac)
    out[out >= 1.0] = 0.0
    return out


def _is_permutation(rows: np.ndarray) -> np.ndarray:
    """Which rows of an (m, n) index array are permutations of 0..n-1."""
    n = rows.shape[1]
    return np.all(np.sort(rows, axis=1) == np.arange(n), axis=1)


def _unique_matrices(rots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first occurrence of each distinct matrix, sorted by value; the id of each
    matrix's distinct value) of (m, 3, 3) integer matrices, as ``numpy.unique(axis=0)`` gives them."""
    flat = rots.reshape(len(rots), 9).astype("int64")
    k = int(np.abs(flat).max()) if flat.size else 0
    if k > 50:  # (2k + 1)^9 would overflow int64: numpy's row-wise unique
        _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    else:
        keys = (flat + k) @ ((2 * k + 1) ** np.arange(8, -1, -1, dtype="int64"))
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, np.asarray(inverse).reshape(len(rots))


def compute_all_sg_permutations(
    positions: np.ndarray,
    rotations: np.ndarray,
    translations: np.ndarray,
    lattice: np.ndarray,
    symprec: float,
    types: np.ndarray | Sequence[int] | None,
    lang: Any = "Rust",
) -> np.ndarray:
    """phonopy's ``compute_all_sg_permutations`` (same arguments, same result), vectorised.

    ``perms[k, i] = j`` where atom j sits at operation k's image of atom i (modulo the lattice);
    ``lattice`` has the basis vectors as columns, ``positions`` are fractional.
    """
    pos = np.asarray(positions, dtype="double")
    rots = np.asarray(rotations)
    trans = np.asarray(translations, dtype="double")
    lat = np.asarray(lattice, dtype="double")
    n, m = len(pos), len(rots)
    type_arr = np.zeros(n, dtype="int64") if types is None else np.asarray(types)
    if (n == 0 or m == 0 or pos.shape != (n, 3) or rots.shape != (m, 3, 3) or trans.shape != (m, 3)
            or lat.shape != (3, 3) or type_arr.shape != (n,) or not symprec > 0):
        return _PHONOPY_ALL_PERMUTATIONS(positions, rotations, translations, lattice, symprec, types, lang=lang)
    try:
        inv_norm = float(np.linalg.norm(np.linalg.inv(lat), 2))  # |Δfrac| <= inv_norm |Δcart|
    except np.linalg.LinAlgError:
        return _PHONOPY_ALL_PERMUTATIONS(positions, rotations, translations, lattice, symprec, types, lang=lang)
    tree = cKDTree(_wrap(pos), boxsize=1.0)
    if tree.query_pairs(UNIQUE_FACTOR * symprec * inv_norm):  # atoms (nearly) on top of each other
        counters["fallback_cells"] += 1
        return _PHONOPY_ALL_PERMUTATIONS(positions, rotations, translations, lattice, symprec, types, lang=lang)
    radius = 2.0 * symprec * inv_norm  # a fractional radius that holds every partner < symprec

    def lookup(frac: np.ndarray) -> np.ndarray:
        """Nearest atom of each fractional point (n where none is within ``radius``)."""
        _, idx = tree.query(_wrap(frac.reshape(-1, 3)), k=1, distance_upper_bound=radius)
        return np.asarray(idx, dtype="int64").reshape(frac.shape[:-1])

    def max_distance(perm: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Per row: the largest Cartesian distance (minimum image, as phonopy measures it) between
        ``target[k, i]`` and its partner ``perm[k, i]``; inf where there is none or the types differ."""
        valid = perm < n
        safe = np.where(valid, perm, 0)
        diff = pos[safe] - target
        diff -= np.rint(diff)
        cart = diff @ lat.T
        dist = np.sqrt(np.einsum("kni,kni->kn", cart, cart))
        dist[~valid | (type_arr[safe] != type_arr[None, :])] = np.inf
        return dist.max(axis=1)

    # the operations grouped by rotation; the others of a rotation differ from its first one by a
    # pure translation, so their permutation is the first one's followed by the translation's
    first, rot_id = _unique_matrices(rots)
    dt = _wrap(trans - trans[first[rot_id]])
    grid = np.rint(dt * 1e6).astype("int64") % 10**6  # translations told apart to 1e-6 (combined below)
    _, t_first, t_id = np.unique((grid[:, 0] * 10**6 + grid[:, 1]) * 10**6 + grid[:, 2], return_index=True,
                                 return_inverse=True)
    t_id = np.asarray(t_id).reshape(m)
    t_off = dt - dt[t_first][t_id]  # an operation's translation minus the one its permutation is built from
    t_off -= np.rint(t_off)
    t_off = np.linalg.norm(t_off @ lat.T, axis=1)  # Å
    base_target = np.matmul(pos[None, :, :], rots[first].transpose(0, 2, 1).astype("double")) \
        + trans[first][:, None, :]  # (r, n, 3)
    trans_target = pos[None, :, :] + dt[t_first][:, None, :]  # (u, n, 3)
    base_perm, trans_perm = lookup(base_target), lookup(trans_target)
    base_dist = np.where(_is_permutation(base_perm), max_distance(base_perm, base_target), np.inf)
    trans_dist = np.where(_is_permutation(trans_perm), max_distance(trans_perm, trans_target), np.inf)
    trans_ext = np.concatenate([trans_perm, np.full((len(trans_perm), 1), n, dtype="int64")], axis=1)
    perms = np.take_along_axis(trans_ext[t_id], base_perm[rot_id], axis=1)  # (m, n); n: no partner
    # composed permutations are bijections; by the triangle inequality each atom's partner lies
    # within the sum of the two distances and the translation's offset (the 0.9: room for rounding)
    limit = ACCEPT_FRACTION * symprec
    ok = base_dist[rot_id] + trans_dist[t_id] + t_off < 0.9 * limit
    unsure = np.flatnonzero(~ok)
    for start in range(0, len(unsure), max(1, _BLOCK // n)):  # checked one by one (rare)
        ks = unsure[start:start + max(1, _BLOCK // n)]
        target = np.matmul(pos[None, :, :], rots[ks].transpose(0, 2, 1).astype("double")) + trans[ks][:, None, :]
        ok[ks] = _is_permutation(perms[ks]) & (max_distance(perms[ks], target) < limit)

    bad = np.flatnonzero(~ok)
    counters["fast_operations"] += m - len(bad)
    counters["fallback_operations"] += len(bad)
    for k in bad:  # phonopy's own matcher, on exactly what phonopy gives it
        rotated = np.dot(pos, rots[k].T) + trans[k]
        perms[k] = _cells.compute_permutation_for_rotation(pos, rotated, lat, symprec, types, lang=lang)
    return np.array(perms, dtype="int64", order="C")


def collect_unique_rotations(rotations: np.ndarray) -> np.ndarray:
    """phonopy's ``collect_unique_rotations``: the distinct rotation matrices, first occurrences
    in input order (int64, C order)."""
    rots = np.asarray(rotations)
    if rots.ndim != 3 or len(rots) == 0 or rots.shape[1:] != (3, 3):
        return _PHONOPY_UNIQUE_ROTATIONS(rotations)
    first, _ = _unique_matrices(rots)
    return np.array(rots[np.sort(first)], dtype="int64", order="C")


def _site_symmetry(self, atom_number: int, lattice: np.ndarray, positions: np.ndarray, rotations: np.ndarray,
                   translations: np.ndarray, symprec: float) -> np.ndarray:
    """``Symmetry._get_site_symmetry``: the rotations of the operations that leave the atom in
    place (Cartesian distance < symprec, minimum image), all operations at once."""
    pos = np.asarray(positions, dtype="double")[atom_number]
    rots = np.asarray(rotations)
    diff = pos - (np.einsum("j,mij->mi", pos, rots) + np.asarray(translations, dtype="double"))
    diff -= np.rint(diff)
    dist = np.linalg.norm(diff @ np.asarray(lattice, dtype="double"), axis=1)
    keep = dist < symprec
    if not keep.any() or np.any((dist > ACCEPT_FRACTION * symprec) & (dist < 2.0 * symprec)):
        counters["fallback_site_symmetry"] += 1  # rounding could decide: phonopy's own loop
        return _PHONOPY_SITE_SYMMETRY(self, atom_number, lattice, positions, rotations, translations, symprec)
    counters["fast_site_symmetry"] += 1
    return np.array(rots[keep], dtype="int64")


_similarity_cache: dict[tuple, np.ndarray] = {}


def _similarity_transformation(rot: Any, mat: Any) -> np.ndarray:
    """phonopy's ``similarity_transformation`` (R M R^-1) for the force constants, remembered per
    (R, M) while the block runs: the force constants ask it once per operation (3,072 for a
    128-atom rock-salt supercell) for a few dozen distinct rotations. The first answer is
    phonopy's own, so the numbers are the same bit for bit."""
    if not (isinstance(rot, np.ndarray) and isinstance(mat, np.ndarray)):
        return _PHONOPY_SIMILARITY(rot, mat)
    key = (rot.dtype.str, rot.shape, rot.tobytes(), mat.dtype.str, mat.shape, mat.tobytes())
    out = _similarity_cache.get(key)
    if out is None:
        out = _similarity_cache[key] = _PHONOPY_SIMILARITY(rot, mat)
    return out.copy()


_lock = threading.RLock()
_depth = 0


@contextmanager
def fast_phonopy_symmetry() -> Iterator[None]:
    """Within the block, phonopy's supercell symmetry setup (atomic permutations, unique
    rotations, site symmetries) runs through the vectorised functions of this module; phonopy's
    own functions are restored when the outermost block ends. Re-entrant."""
    global _depth
    # (where, name, this module's function, phonopy's own)
    patches = (
        (_cells, "compute_all_sg_permutations", compute_all_sg_permutations, _PHONOPY_ALL_PERMUTATIONS),
        (_symmetry, "compute_all_sg_permutations", compute_all_sg_permutations, _PHONOPY_ALL_PERMUTATIONS),
        (_symmetry, "collect_unique_rotations", collect_unique_rotations, _PHONOPY_UNIQUE_ROTATIONS),
        (_symmetry.Symmetry, "_get_site_symmetry", _site_symmetry, _PHONOPY_SITE_SYMMETRY),
        (_force_constants, "similarity_transformation", _similarity_transformation, _PHONOPY_SIMILARITY),
    )
    with _lock:
        if _depth == 0:
            for where, name, ours, _ in patches:
                setattr(where, name, ours)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for where, name, _, theirs in patches:
                    setattr(where, name, theirs)
                _similarity_cache.clear()
