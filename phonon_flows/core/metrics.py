"""Error metrics of an MLIP against a reference: the paper's MAE and R², phonon frequencies over
full dispersions, dynamical-stability confusion matrix and force errors.

Plain numpy, no scikit-learn. Conventions (the same as scikit-learn's where it has one):

- Every function takes ``(reference, predicted)`` in that order. R² is the coefficient of
  determination of the prediction, ``1 - SS_res / SS_tot`` with ``SS_tot`` taken about the mean
  of the *reference*, so it is not symmetric in its arguments.
- When the reference has no spread (``SS_tot == 0``) R² is 1.0 for a perfect prediction and 0.0
  otherwise (scikit-learn's ``force_finite=True``); with fewer than two values R² is NaN.
- Non-finite values or mismatched shapes raise :class:`~phonon_flows.errors.InputError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from phonon_flows.errors import InputError

#: the paper's stability criterion: dynamically unstable if any frequency < -0.5 THz
DEFAULT_STABILITY_TOLERANCE_THZ = 0.5


def _pair(reference, predicted, what: str = "values") -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=float)
    pred = np.asarray(predicted, dtype=float)
    if ref.shape != pred.shape:
        raise InputError(f"{what}: reference has shape {ref.shape} but prediction has shape {pred.shape}")
    ref, pred = ref.ravel(), pred.ravel()
    if ref.size == 0:
        raise InputError(f"{what}: no values to compare")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(pred))):
        raise InputError(f"{what}: NaN or infinite values")
    return ref, pred


def mae(reference, predicted) -> float:
    """Mean absolute error ``mean(|predicted - reference|)``."""
    ref, pred = _pair(reference, predicted)
    return float(np.mean(np.abs(pred - ref)))


def rmse(reference, predicted) -> float:
    """Root-mean-square error ``sqrt(mean((predicted - reference)**2))``."""
    ref, pred = _pair(reference, predicted)
    return float(np.sqrt(np.mean((pred - ref) ** 2)))


def r2(reference, predicted) -> float:
    """Coefficient of determination of ``predicted`` against ``reference`` (see module doc)."""
    ref, pred = _pair(reference, predicted)
    if ref.size < 2:
        return float("nan")
    ss_res = float(np.sum((ref - pred) ** 2))
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


@dataclass(frozen=True)
class RegressionMetrics:
    """MAE, RMSE, R², largest absolute error and number of values, in the units of the input."""

    mae: float
    rmse: float
    r2: float
    max_abs_error: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def regression_metrics(reference, predicted, what: str = "values") -> RegressionMetrics:
    """All regression metrics of ``predicted`` against ``reference`` at once."""
    ref, pred = _pair(reference, predicted, what)
    err = pred - ref
    return RegressionMetrics(
        mae=float(np.mean(np.abs(err))),
        rmse=float(np.sqrt(np.mean(err**2))),
        r2=r2(ref, pred),
        max_abs_error=float(np.max(np.abs(err))),
        n=int(ref.size),
    )


# --- phonon frequencies -----------------------------------------------------------------------


def match_bands(frequencies) -> np.ndarray:
    """Bands matched at each q-point by sorting the frequencies in ascending order, per q-point.

    This is the paper's way of pairing the two dispersions: the i-th lowest MLIP frequency at q is
    compared with the i-th lowest reference frequency at the same q (no eigenvector matching,
    so band crossings do not matter). Phonopy already returns eigenvalues sorted this way.
    """
    freqs = np.asarray(frequencies, dtype=float)
    if freqs.ndim != 2:
        raise InputError(f"frequencies must be an array [n_qpoints, n_bands], got shape {freqs.shape}")
    return np.sort(freqs, axis=1)


def paired_frequencies(
    reference_frequencies,
    predicted_frequencies,
    reference_qpoints=None,
    predicted_qpoints=None,
    material_id: str | None = None,
    qpoint_tolerance: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat arrays of reference and predicted frequencies (THz) over a full dispersion, bands
    matched per q-point by :func:`match_bands`.

    Both dispersions must be on the same q-points (same path and sampling, same supercell and
    primitive cell, hence the same number of bands); when q-points are given they are checked.
    """
    ref = np.asarray(reference_frequencies, dtype=float)
    pred = np.asarray(predicted_frequencies, dtype=float)
    if ref.shape != pred.shape or ref.ndim != 2:
        raise InputError(
            f"dispersions differ in shape: reference {ref.shape}, MLIP {pred.shape} "
            "([n_qpoints, n_bands]); use the same path, supercell and primitive cell",
            material_id=material_id,
            stage="benchmark",
        )
    if reference_qpoints is not None and predicted_qpoints is not None:
        qr = np.asarray(reference_qpoints, dtype=float)
        qp = np.asarray(predicted_qpoints, dtype=float)
        if qr.shape != qp.shape or not np.allclose(qr, qp, atol=qpoint_tolerance):
            raise InputError(
                "dispersions are not on the same q-points", material_id=material_id, stage="benchmark"
            )
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(pred))):
        raise InputError("NaN or infinite phonon frequencies", material_id=material_id, stage="benchmark")
    return match_bands(ref).ravel(), match_bands(pred).ravel()


def frequency_metrics(
    reference_frequencies,
    predicted_frequencies,
    reference_qpoints=None,
    predicted_qpoints=None,
    material_id: str | None = None,
) -> RegressionMetrics:
    """MAE/RMSE/R² (THz) of phonon frequencies over a full dispersion, bands sorted per q-point."""
    ref, pred = paired_frequencies(
        reference_frequencies, predicted_frequencies, reference_qpoints, predicted_qpoints, material_id
    )
    return regression_metrics(ref, pred, what="frequencies")


# --- dynamical stability ----------------------------------------------------------------------


def is_stable(min_frequency_THz: float, tolerance_THz: float = DEFAULT_STABILITY_TOLERANCE_THZ) -> bool:
    """Dynamically stable unless the lowest frequency is below ``-|tolerance_THz|``.

    The tolerance may be given as a magnitude (0.5) or as the threshold itself (-0.5).
    """
    return bool(float(min_frequency_THz) >= -abs(float(tolerance_THz)))


@dataclass(frozen=True)
class ConfusionMatrix:
    """Confusion matrix of dynamical stability, with *stable* as the positive class.

    - ``true_stable`` (TP): stable in the reference and predicted stable;
    - ``false_stable`` (FP): unstable in the reference but predicted stable;
    - ``true_unstable`` (TN): unstable in both;
    - ``false_unstable`` (FN): stable in the reference but predicted unstable.
    Percentages are of all materials; accuracy is ``(TP + TN) / total`` (a fraction, 0..1).
    """

    true_stable: int
    false_stable: int
    true_unstable: int
    false_unstable: int

    @property
    def total(self) -> int:
        return self.true_stable + self.false_stable + self.true_unstable + self.false_unstable

    @property
    def accuracy(self) -> float:
        return (self.true_stable + self.true_unstable) / self.total if self.total else float("nan")

    def percentages(self) -> dict[str, float]:
        t = self.total
        counts = self.counts()
        return {k: (100.0 * v / t if t else float("nan")) for k, v in counts.items()}

    def counts(self) -> dict[str, int]:
        return {
            "true_stable": self.true_stable,
            "false_stable": self.false_stable,
            "true_unstable": self.true_unstable,
            "false_unstable": self.false_unstable,
        }

    def as_array(self) -> np.ndarray:
        """2x2 counts, rows = reference (stable, unstable), columns = prediction (stable, unstable)."""
        return np.array([[self.true_stable, self.false_unstable], [self.false_stable, self.true_unstable]])


def confusion_matrix(reference_stable: Sequence[bool], predicted_stable: Sequence[bool]) -> ConfusionMatrix:
    """Confusion matrix from booleans (True = dynamically stable), stable being the positive class."""
    ref = np.asarray(reference_stable, dtype=bool).ravel()
    pred = np.asarray(predicted_stable, dtype=bool).ravel()
    if ref.shape != pred.shape:
        raise InputError(f"stability: {ref.size} reference labels but {pred.size} predictions")
    return ConfusionMatrix(
        true_stable=int(np.sum(ref & pred)),
        false_stable=int(np.sum(~ref & pred)),
        true_unstable=int(np.sum(~ref & ~pred)),
        false_unstable=int(np.sum(ref & ~pred)),
    )


def stability_confusion(
    reference_min_frequencies_THz,
    predicted_min_frequencies_THz,
    tolerance_THz: float = DEFAULT_STABILITY_TOLERANCE_THZ,
) -> ConfusionMatrix:
    """Confusion matrix of stability from each material's lowest frequency (THz) at a tolerance."""
    ref, pred = _pair(reference_min_frequencies_THz, predicted_min_frequencies_THz, "minimum frequencies")
    return confusion_matrix([is_stable(f, tolerance_THz) for f in ref], [is_stable(f, tolerance_THz) for f in pred])


# --- forces -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForceMetrics:
    """Force errors over all Cartesian components: MAE and RMSE in meV/Å, R², number of components."""

    mae_meV_per_A: float
    rmse_meV_per_A: float
    r2: float
    n_components: int
    n_structures: int

    def as_dict(self) -> dict:
        return asdict(self)


def force_metrics(reference_forces, predicted_forces) -> ForceMetrics:
    """Component-wise force errors of a model on a labelled set.

    ``reference_forces`` and ``predicted_forces`` are sequences of (N_i, 3) arrays in eV/Å (one per
    structure, N_i may differ) or one stacked array. MAE/RMSE are returned in meV/Å, as the
    paper quotes them (MACE's ``mae_f`` is the same component-wise MAE, in eV/Å).
    """
    ref_list = [np.asarray(f, dtype=float).reshape(-1, 3) for f in _as_list(reference_forces)]
    pred_list = [np.asarray(f, dtype=float).reshape(-1, 3) for f in _as_list(predicted_forces)]
    if len(ref_list) != len(pred_list):
        raise InputError(f"forces: {len(ref_list)} reference structures but {len(pred_list)} predicted")
    for i, (a, b) in enumerate(zip(ref_list, pred_list)):
        if a.shape != b.shape:
            raise InputError(f"forces of structure {i}: reference {a.shape} vs predicted {b.shape}")
    ref = np.concatenate([a.ravel() for a in ref_list]) if ref_list else np.empty(0)
    pred = np.concatenate([b.ravel() for b in pred_list]) if pred_list else np.empty(0)
    m = regression_metrics(ref, pred, what="forces")
    return ForceMetrics(
        mae_meV_per_A=1000.0 * m.mae,
        rmse_meV_per_A=1000.0 * m.rmse,
        r2=m.r2,
        n_components=m.n,
        n_structures=len(ref_list),
    )


def _as_list(forces) -> list:
    if isinstance(forces, np.ndarray):
        return [forces] if forces.ndim <= 2 else list(forces)
    return list(forces)
