"""How much the members of a committee of potentials disagree on a material's phonons.

Each member's forces on the same displaced supercells give its own force constants; the spread is
the mean, over pairs of members, of the mean absolute difference of their frequencies on a
Γ-centred q-mesh (frequencies sorted at each q-point, weighted by the mesh's symmetry weights),
in THz. It needs no reference calculation: members trained with different seeds agree where the
training data pinned the potential down and drift apart where it extrapolates (a coordination or
a composition it never saw), so a large spread marks a prediction to check with DFT.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
from phonopy import Phonopy
from scipy.stats import spearmanr

from phonon_flows.core.phonons import mesh_from_length, produce_force_constants, set_forces, subtract_residual_forces

#: q-mesh density of the spread (Å, as phonopy's mesh length): coarse, the spread is a flag
SPREAD_MESH_LENGTH = 20.0
#: spread (THz) above which a material's MLIP phonons are flagged as uncertain: read off the DFT
#: demo's first committees (two 8-channel members), where the held-out materials under it were
#: mostly within 0.6 THz of DFT and those over it mostly 1-5 THz off (README, "A committee and its
#: spread"); a first setting, not a calibrated one
DEFAULT_SPREAD_THRESHOLD_THZ = 0.5


def member_frequencies(phonon: Phonopy, member_forces: Sequence[Sequence[np.ndarray]], fc_method: str | None = None,
                       mesh_length: float = SPREAD_MESH_LENGTH,
                       material_id: str | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Each member's frequencies (THz, ``(n_q, n_bands)`` sorted at each q) on one q-mesh, and the
    mesh's weights. ``member_forces[m][i]``: member ``m``'s forces (eV/Å) on displaced supercell ``i``
    of ``phonon``'s dataset. ``phonon`` itself is left as it was (a copy is used)."""
    work = copy.deepcopy(phonon)  # dataset and NAC included (phonopy's own copy leaves them behind)
    mesh = mesh_from_length(work.primitive.cell, mesh_length)
    freqs, weights = [], None
    for forces in member_forces:
        set_forces(work, list(forces), material_id=material_id)
        produce_force_constants(work, fc_method, material_id=material_id)
        work.run_mesh(mesh, is_mesh_symmetry=True, is_gamma_center=True, with_eigenvectors=False)
        freqs.append(np.sort(np.asarray(work.mesh.frequencies, dtype=float), axis=1))
        weights = np.asarray(work.mesh.weights, dtype=float)
    return freqs, weights


def frequency_spread(freqs: Sequence[np.ndarray], weights: np.ndarray) -> float:
    """Mean over member pairs of the q-weighted mean absolute frequency difference (THz)."""
    if len(freqs) < 2:
        raise ValueError("a spread needs at least two members")
    w = np.asarray(weights, dtype=float)[:, None] * np.ones_like(freqs[0])
    return float(np.mean([np.sum(w * np.abs(a - b)) / np.sum(w) for a, b in combinations(freqs, 2)]))


def committee_spread(phonon: Phonopy, member_forces: Sequence[Sequence[np.ndarray]], fc_method: str | None = None,
                     mesh_length: float = SPREAD_MESH_LENGTH, material_id: str | None = None) -> float:
    """The committee's frequency spread (THz) on ``phonon``'s displaced supercells."""
    freqs, weights = member_frequencies(phonon, member_forces, fc_method, mesh_length, material_id)
    return frequency_spread(freqs, weights)


def spread_from_member_forces(phonon: Phonopy, member_forces: Sequence[np.ndarray | None], n_displaced: int,
                              with_residual: bool, fc_method: str | None = None,
                              material_id: str | None = None) -> float | None:
    """The spread from what a committee engine returned for each computed supercell: an array
    ``(k, n_atoms, 3)`` of its members' forces, for the ``n_displaced`` displaced supercells and
    then, ``with_residual``, the undisplaced one (each member's own residual is taken off its
    forces). None when some structure has no member forces (not a committee)."""
    if not member_forces or any(m is None for m in member_forces):
        return None
    stacks = [np.asarray(m, dtype=float) for m in member_forces]
    k = stacks[0].shape[0]
    if k < 2:
        return None
    per_member = []
    for j in range(k):
        arrays = [s[j] for s in stacks]
        forces, _ = subtract_residual_forces(arrays[:n_displaced], arrays[n_displaced] if with_residual else None,
                                             material_id=material_id)
        per_member.append(forces)
    return committee_spread(phonon, per_member, fc_method, material_id=material_id)


def spread_error_correlation(spread: Mapping[str, float | None],
                             error: Mapping[str, float | None]) -> tuple[float | None, int]:
    """Spearman's rank correlation between the committee spread and the error against a reference
    (e.g. each material's frequency MAE against DFT, THz) over the materials that have both, and
    their number; None with fewer than three."""
    ids = [i for i in error if error[i] is not None and spread.get(i) is not None]
    if len(ids) < 3:
        return None, len(ids)
    rho = spearmanr([spread[i] for i in ids], [error[i] for i in ids]).statistic
    return (None if not np.isfinite(rho) else float(rho)), len(ids)


def trusted_and_flagged(spread: Mapping[str, float | None],
                        threshold: float = DEFAULT_SPREAD_THRESHOLD_THZ) -> tuple[list[str], list[str]]:
    """``(trusted, flagged)``: the materials whose committee spread (THz) is at most ``threshold``, and
    the others (above it, or without a spread), each in the mapping's order."""
    trusted = [i for i, v in spread.items() if v is not None and v <= threshold]
    low = set(trusted)
    return trusted, [i for i in spread if i not in low]
