"""Figures are written, are real images, and the paper table carries the right numbers."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from _benchmark_data import band_dict, nacl_phonopy

from phonon_flows.report import figures as report
from phonon_flows.core.polymorphs import Polymorph, analyze_polymorphs
from phonon_flows.schemas.benchmark import (
    BenchmarkDoc,
    ForceBenchmark,
    PolymorphBenchmark,
    Regression,
    StabilityConfusion,
    ThermalMetrics,
)
from phonon_flows.schemas.common import EngineInfo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    img = plt.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.02  # not a blank canvas


def test_parity_and_confusion(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.uniform(-1, 12, 3000)
    pred = ref + rng.normal(0, 0.2, ref.size)
    check_png(report.parity_plot(ref, pred, tmp_path / "p.png", quantity="frequency", unit="THz"))
    # a handful of points (thermal properties of a few materials) and a single point work too
    check_png(report.parity_plot([1.0, 2.0, 3.0], [1.1, 2.0, 2.9], tmp_path / "few.png", quantity="A", unit="meV"))
    check_png(report.parity_plot([1.0], [1.0], tmp_path / "one.png", quantity="A", unit="meV"), min_bytes=3000)
    counts = {"true_stable": 30, "false_stable": 4, "true_unstable": 10, "false_unstable": 6}
    check_png(report.confusion_matrix_plot(counts, tmp_path / "cm.png", tolerance_THz=0.5))
    with pytest.raises(ValueError, match="non-empty"):
        report.parity_plot([], [], tmp_path / "x.png", quantity="A", unit="meV")


def test_band_structure_plot_and_ticks(shared_data, tmp_path):
    ref = band_dict(nacl_phonopy(shared_data))
    mlip = band_dict(nacl_phonopy(shared_data, scale=0.9))
    d = np.asarray(ref["distances"])
    pos, names = report._ticks(ref, d)
    # NaCl (fcc) path of seekpath through phonopy: Γ-X-U|K-Γ-L-W-X
    assert names == ["Γ", "X", "U|K", "Γ", "L", "W", "X"]
    assert pos[0] == pytest.approx(0.0) and pos[-1] == pytest.approx(d[-1])
    out = report.band_structure_plot(ref, mlip, tmp_path / "bands.png", title="NaCl", mlip_label="MLIP x0.9")
    check_png(out, min_bytes=20000)


def test_polymorph_and_learning_curve(tmp_path):
    polys = [
        Polymorph("a-1", "AB", -1.000, {"300": 0.0}, {"300": 0.0}),
        Polymorph("a-2", "AB", -0.995, {"300": -3.0}, {"300": -2.0}),
        Polymorph("a-3", "AB", -0.970, {"300": -15.0}, {"300": -25.0}),
        Polymorph("b-1", "CD", -2.000, {"300": 1.0}, {"300": 1.0}),
        Polymorph("b-2", "CD", -1.980, {"300": 5.0}, {"300": 2.0}),
    ]
    res = analyze_polymorphs(polys, [300])["300"]
    check_png(report.polymorph_plot(res.as_dict(), tmp_path / "poly.png"))
    curve = [
        {"epoch": e, "stage": "one" if e < 5 else "two", "train_loss": 10.0 / (e + 1), "valid_loss": 12.0 / (e + 1),
         "valid_force_mae": 200.0 / (e + 1), "valid_force_rmse": 260.0 / (e + 1), "time": 1.0}
        for e in range(10)
    ]
    check_png(report.learning_curve_plot(curve, tmp_path / "lc.png"))
    with pytest.raises(ValueError, match="empty"):
        report.learning_curve_plot([], tmp_path / "none.png")


def small_doc() -> BenchmarkDoc:
    reg = lambda mae, r2=None: Regression(mae=mae, rmse=mae * 1.3, r2=r2, max_abs_error=3 * mae, n=10)  # noqa: E731
    ref = EngineInfo(name="chgnet", kind="reference", version="0.3.0")
    mlip = EngineInfo(name="mace", kind="mlip", model_sha256="ab" * 32)
    return BenchmarkDoc(
        mlip_engine=mlip, reference_engine=ref, mlip_label=mlip.label, reference_label=ref.label,
        reference_is_dft=False, n_materials=10, temperatures=["300", "1000"],
        frequency=reg(0.25, 0.99),
        thermal={"300": ThermalMetrics(temperature_K=300, A_vib=reg(3.0), Cv=reg(1.2), S_vib=reg(7.5)),
                 "1000": ThermalMetrics(temperature_K=1000, A_vib=reg(11.0), Cv=reg(0.1), S_vib=reg(8.0))},
        stability=StabilityConfusion(tolerance_THz=0.5, counts={"true_stable": 7, "false_stable": 1,
                                     "true_unstable": 1, "false_unstable": 1},
                                     percentages={}, accuracy_percent=80.0, total=10),
        forces={"validation": ForceBenchmark(mae_meV_per_A=22.0, source="training")},
        polymorphs={"300": PolymorphBenchmark(temperature="300", offset_meV=10, n_common=2, n_reference=3, n_mlip=2)},
    )


def test_paper_metrics_table():
    doc = small_doc()
    rows = report.paper_metrics_dict(doc)
    assert rows["frequency MAE"] == {"unit": "THz", "this_run": 0.25, "paper": 0.18}
    assert rows["frequency R²"]["paper"] == 0.997
    assert rows["A_vib MAE 1000 K"] == {"unit": "meV/atom", "this_run": 11.0, "paper": 9.30}
    # the paper's C_v and S_vib MAEs are per mole of primitive cells: compared in that unit
    assert rows["C_v MAE 300 K"]["paper"] == 1.49 and rows["C_v MAE 1000 K"]["paper"] == 1.31
    assert rows["C_v MAE 300 K"]["unit"] == "J/(K·mol of primitive cells)"
    assert rows["S_vib MAE 300 K"]["paper"] == 6.99 and rows["S_vib MAE 1000 K"]["paper"] == 8.30
    assert rows["C_v MAE 300 K (per atom)"]["unit"] == "J/(K·mol of atoms)"
    assert rows["NAC (both sides)"] == {"unit": "", "this_run": "none", "paper": "none"}
    assert rows["A_vib R² 300 K"]["paper"] == 0.995 and rows["ΔA_vib MAE 1000 K"]["paper"] == 20.83
    assert rows["ΔA_vib R² 300 K"]["paper"] == 0.778 and rows["force MAE (training set)"]["paper"] == 18.8
    assert rows["polymorph transitions, MLIP 1000 K"]["paper"] == 18
    assert rows["polymorph transitions in common 1000 K"]["paper"] == "13/19"
    assert rows["stability accuracy (−0.5 THz)"] == {"unit": "%", "this_run": 80.0, "paper": 86.2}
    assert rows["force MAE (validation)"]["paper"] == 20.5
    assert rows["polymorph transitions in common 300 K"] == {"unit": "", "this_run": "2/3", "paper": "16/19"}
    text = report.render_paper_metrics(doc)
    assert "NOT DFT" in text and "0.18" in text and "16/19" in text and "86.2" in text
    assert "not DFT" in text  # caption


def test_write_benchmark_figures(tmp_path):
    doc = small_doc()
    figs = report.write_benchmark_figures(doc, tmp_path, frequency_pairs=([0, 1, 2, 3.0], [0.1, 1, 2.1, 3.0]))
    assert set(figs) == {"parity_frequency", "confusion_stability"}  # no rows: no thermal/polymorph plots
    for f in figs.values():
        check_png(tmp_path / f)


def _capture(monkeypatch):
    """The figures the plotting functions save (to look at their axes)."""
    figs = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (figs.append(fig), save(fig, path))[1])
    return figs


def test_figures_say_what_they_show(monkeypatch, tmp_path):
    from matplotlib.collections import QuadMesh

    figs = _capture(monkeypatch)
    report.parity_plot([1.0, 2.0, 3.0], [1.1, 2.0, 2.9], tmp_path / "few.png", quantity="A", unit="meV", title="A")
    report.parity_plot(np.linspace(0, 1, 400), np.linspace(0, 1, 400), tmp_path / "many.png", quantity="A",
                       unit="meV")
    few, many = figs[0].axes[0], figs[1].axes[0]
    assert "scatter, 3 values" in few.get_title() and not any(isinstance(c, QuadMesh) for c in few.collections)
    assert "2-D histogram" in many.get_title() and any(isinstance(c, QuadMesh) for c in many.collections)

    # a forces-only fit: the learning curve shows force errors, not energy errors
    curve = [{"epoch": e, "stage": "one", "valid_loss": 1.0 / (e + 1), "valid_force_mae": 100.0 / (e + 1),
              "valid_energy_mae": 400.0 + e} for e in range(5)]
    report.learning_curve_plot(curve, tmp_path / "lc.png")
    bottom = figs[2].axes[1]
    assert [ln.get_label() for ln in bottom.lines] == ["valid_force_mae"]
    assert bottom.get_ylabel() == "validation force error (meV/Å)"

    # the title counts the transitions like the table: reference, MLIP, in common
    polys = [Polymorph("a-1", "AB", -1.000, {"300": 0.0}, {"300": 0.0}),
             Polymorph("a-2", "AB", -0.995, {"300": 30.0}, {"300": -2.0}),
             Polymorph("b-1", "CD", -2.000, {"300": 0.0}, {"300": 0.0}),
             Polymorph("b-2", "CD", -1.998, {"300": -1.0}, {"300": -1.0})]
    res = analyze_polymorphs(polys, [300])["300"]
    report.polymorph_plot(res.as_dict(), tmp_path / "poly.png")
    title = figs[3].axes[0].get_title()
    assert f"reference {res.n_reference}, MLIP {res.n_mlip}, in common {res.n_common}" in title
    assert res.n_mlip == 2 and res.n_reference == 1


def test_band_plot_labels_every_special_point(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    # two segments, not connected: Γ-X and K-Γ (phonopy's labels list alone would lose one end)
    bands = {"distances": [0, 0.5, 1.0, 1.0, 1.5, 2.0], "frequencies": [[0], [1], [2], [2], [1], [0]],
             "labels": ["G", "X", "K", "G"], "segment_labels": [["G", "X"], ["K", "G"]],
             "path_connections": [False, False], "segment_nqpoints": [3, 3]}
    report.bands_plot(bands, tmp_path / "b.png", title="x")
    ax = figs[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Γ", "X|K", "Γ"]
