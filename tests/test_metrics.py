"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonon_flows.core import metrics as M
from phonon_flows.errors import InputError

REF = [1.0, 2.0, 3.0, 4.0]
PRED = [1.5, 2.0, 2.0, 5.0]
# errors 0.5, 0, -1, 1: MAE 2.5/4; RMSE sqrt(2.25/4); SS_res 2.25, SS_tot about 2.5 = 5 -> R² 0.55


def test_mae_rmse_r2_by_hand():
    assert M.mae(REF, PRED) == pytest.approx(0.625)
    assert M.rmse(REF, PRED) == pytest.approx(0.75)
    assert M.r2(REF, PRED) == pytest.approx(0.55)
    m = M.regression_metrics(REF, PRED)
    assert (m.mae, m.rmse, m.r2, m.max_abs_error, m.n) == pytest.approx((0.625, 0.75, 0.55, 1.0, 4))


def test_r2_is_not_symmetric_and_uses_reference_mean():
    # with the prediction as reference: SS_tot about mean 2.625 = 1.265625+0.390625+0.390625+5.640625
    assert M.r2(PRED, REF) == pytest.approx(1 - 2.25 / 7.6875)


def test_r2_edge_cases():
    assert M.r2([1, 2, 3], [1, 2, 3]) == 1.0
    assert M.r2([1, 2, 3], [2, 2, 2]) == pytest.approx(0.0)  # predicting the mean
    assert M.r2([2, 2], [2, 2]) == 1.0  # no spread, perfect
    assert M.r2([2, 2], [1, 3]) == 0.0  # no spread, imperfect
    assert math.isnan(M.r2([1.0], [2.0]))


def test_bad_input_raises():
    with pytest.raises(InputError, match="shape"):
        M.mae([1, 2], [1, 2, 3])
    with pytest.raises(InputError, match="NaN"):
        M.rmse([1, np.nan], [1, 2])
    with pytest.raises(InputError, match="no values"):
        M.r2([], [])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=30), st.floats(-10, 10))
def test_constant_shift(values, shift):
    ref = np.array(values)
    pred = ref + shift
    assert M.mae(ref, pred) == pytest.approx(abs(shift), abs=1e-9)
    assert M.rmse(ref, pred) == pytest.approx(abs(shift), abs=1e-9)
    assert M.mae(ref, pred) <= M.rmse(ref, pred) + 1e-12


def test_frequency_metrics_sort_bands_per_qpoint():
    ref = [[0.0, 1.0, 2.0], [3.0, 1.0, 2.0]]  # second q-point unsorted: 1, 2, 3
    pred = [[0.0, 1.1, 2.2], [1.0, 2.0, 3.3]]
    m = M.frequency_metrics(ref, pred)
    assert m.n == 6
    assert m.mae == pytest.approx(0.6 / 6)
    assert m.max_abs_error == pytest.approx(0.3)
    ss_tot = np.sum((np.array([0, 1, 2, 1, 2, 3]) - 1.5) ** 2)
    assert m.r2 == pytest.approx(1 - (0.01 + 0.04 + 0.09) / ss_tot)
    r, p = M.paired_frequencies(ref, pred)
    assert r.tolist() == [0, 1, 2, 1, 2, 3]


def test_frequency_metrics_checks_qpoints_and_shapes():
    f = np.ones((2, 3))
    q = [[0, 0, 0], [0.5, 0, 0]]
    M.frequency_metrics(f, f, q, q)
    with pytest.raises(InputError, match="same q-points"):
        M.frequency_metrics(f, f, q, [[0, 0, 0], [0.25, 0, 0]])
    with pytest.raises(InputError, match="mp-1.*differ in shape"):
        M.frequency_metrics(np.ones((2, 3)), np.ones((2, 6)), material_id="mp-1")


def test_stability_threshold():
    assert M.is_stable(-0.49999)
    assert M.is_stable(-0.5)  # unstable only *below* -0.5 THz
    assert not M.is_stable(-0.50001)
    assert M.is_stable(-0.3, tolerance_THz=-0.5) == M.is_stable(-0.3, tolerance_THz=0.5)
    assert not M.is_stable(-0.3, tolerance_THz=0.1)


def test_confusion_matrix_by_hand():
    ref = [True, True, True, False, False, True]
    pred = [True, False, True, True, False, True]
    cm = M.confusion_matrix(ref, pred)
    assert cm.counts() == {"true_stable": 3, "false_stable": 1, "true_unstable": 1, "false_unstable": 1}
    assert cm.total == 6
    assert cm.accuracy == pytest.approx(4 / 6)
    assert cm.percentages()["true_stable"] == pytest.approx(50.0)
    assert sum(cm.percentages().values()) == pytest.approx(100.0)
    assert cm.as_array().tolist() == [[3, 1], [1, 1]]


def test_stability_confusion_from_min_frequencies():
    ref = [-0.1, 0.0, -0.6, -2.0, -0.49]  # stable, stable, unstable, unstable, stable
    pred = [-0.7, 0.0, -0.1, -1.0, -0.2]  # unstable, stable, stable, unstable, stable
    cm = M.stability_confusion(ref, pred, tolerance_THz=0.5)
    assert (cm.true_stable, cm.false_stable, cm.true_unstable, cm.false_unstable) == (2, 1, 1, 1)
    assert cm.accuracy == pytest.approx(0.6)


def test_force_metrics_by_hand():
    ref = [np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])]
    pred = [np.array([[1.01, 0.0, 0.0]]), np.array([[0.0, -0.02, 0.0], [0.0, 0.0, 1.0]])]
    fm = M.force_metrics(ref, pred)
    assert fm.n_components == 9 and fm.n_structures == 2
    assert fm.mae_meV_per_A == pytest.approx(30.0 / 9)  # (10 + 20) meV/Å over 9 components
    assert fm.rmse_meV_per_A == pytest.approx(1000 * math.sqrt((0.0001 + 0.0004) / 9))
    ref_flat = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1.0])
    assert fm.r2 == pytest.approx(1 - 0.0005 / np.sum((ref_flat - ref_flat.mean()) ** 2))
    with pytest.raises(InputError, match="structure 1"):
        M.force_metrics(ref, [pred[0], pred[1][:1]])
