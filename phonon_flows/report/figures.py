"""Figures (PNG, matplotlib's Agg backend) and tables of a benchmark.

- :func:`parity_plot`: MLIP vs reference as a 2-D histogram with a logarithmic colour scale
  (frequencies; A_vib, C_v, S_vib per temperature), with MAE and R² written on it;
- :func:`confusion_matrix_plot`: the dynamical-stability confusion matrix;
- :func:`band_structure_plot`: an MLIP band structure drawn over the reference's;
- :func:`polymorph_plot`: ΔH against ΔA_vib of the polymorphs with the line y = −x + offset
  (points below it are transition candidates);
- :func:`learning_curve_plot`: the training learning curve;
- :func:`write_benchmark_figures`: all of the above for a :class:`~phonon_flows.schemas.benchmark.BenchmarkDoc`;
- :func:`paper_metrics` / :func:`paper_metrics_table` / :func:`render_paper_metrics`: this run's
  numbers beside the paper's, as a dict, a rich table, and text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from phonon_flows.core.metrics import r2 as _r2  # noqa: E402
from phonon_flows.core.polymorphs import temperature_key, temperature_label, temperature_value  # noqa: E402
from phonon_flows.schemas.benchmark import PAPER_NUMBERS, BenchmarkDoc, PaperNumbers  # noqa: E402
from phonon_flows.schemas.common import get_field  # noqa: E402

DPI = 150
#: parity plots with at most this many values also mark each value
SCATTER_MAX = 300
#: parity plots with fewer values than this are plain scatter plots (a 2-D histogram of a handful
#: of points is mostly empty cells)
HISTOGRAM_MIN = 50
#: polymorph plots with at most this many polymorphs name each one
ANNOTATE_MAX = 30


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def safe_name(text: str) -> str:
    """A file-name-safe version of a material id or label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


# --- parity plots ------------------------------------------------------------------------------


def parity_plot(
    reference: Sequence[float],
    predicted: Sequence[float],
    path: str | Path,
    *,
    quantity: str,
    unit: str,
    reference_label: str = "reference",
    mlip_label: str = "MLIP",
    bins: int = 80,
    title: str | None = None,
) -> Path:
    """Parity plot of ``predicted`` against ``reference``: a 2-D histogram (log colour scale) with
    the values marked, or a plain scatter plot below :data:`HISTOGRAM_MIN` values (the title says
    which)."""
    x = np.asarray(reference, dtype=float).ravel()
    y = np.asarray(predicted, dtype=float).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"parity plot of {quantity}: need equal, non-empty arrays ({x.size} vs {y.size})")
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.03 * (hi - lo) if hi > lo else max(1.0, abs(hi)) * 0.05
    lo, hi = lo - pad, hi + pad
    histogram = x.size >= HISTOGRAM_MIN
    if histogram:
        nbins = int(max(10, min(bins, 4 * math.sqrt(x.size) + 10)))
        counts, xe, ye = np.histogram2d(x, y, bins=nbins, range=[[lo, hi], [lo, hi]])
        counts = np.ma.masked_equal(counts, 0)
        fig, ax = plt.subplots(figsize=(4.8, 4.2))
        mesh = ax.pcolormesh(xe, ye, counts.T, norm=LogNorm(vmin=1, vmax=max(2.0, float(counts.max()))),
                             cmap="viridis")
        fig.colorbar(mesh, ax=ax, label="count")
        if x.size <= SCATTER_MAX:  # show each value over its histogram cell
            ax.scatter(x, y, s=6, color="black", lw=0, zorder=3)
    else:
        fig, ax = plt.subplots(figsize=(4.4, 4.2))
        ax.scatter(x, y, s=28, color="tab:blue", edgecolors="black", lw=0.5, zorder=3)
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{reference_label} {quantity} ({unit})")
    ax.set_ylabel(f"{mlip_label} {quantity} ({unit})")
    mae = float(np.mean(np.abs(y - x)))
    r2 = _r2(x, y)
    ax.text(
        0.04, 0.96, f"MAE = {mae:.3g} {unit}\nR$^2$ = {r2:.4f}\nN = {x.size}",
        transform=ax.transAxes, va="top", ha="left", fontsize=8,
        bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9),
    )
    kind = "2-D histogram, log colour scale" if histogram else "scatter"
    ax.set_title(f"{title + ' ' if title else ''}({kind}, {x.size} values)", fontsize=9)
    return _save(fig, path)


# --- confusion matrix ----------------------------------------------------------------------------


def confusion_matrix_plot(
    counts: Mapping[str, int] | Any,
    path: str | Path,
    *,
    tolerance_THz: float | None = None,
    reference_label: str = "reference",
    mlip_label: str = "MLIP",
) -> Path:
    """The stability confusion matrix: rows the reference (stable, unstable), columns the MLIP.

    ``counts`` is a dict with true_stable, false_stable, true_unstable, false_unstable, or an
    object with a ``counts`` attribute/method (StabilityConfusion, core ConfusionMatrix).
    """
    c = get_field(counts, "counts", counts)
    c = c() if callable(c) else c
    mat = np.array([[c["true_stable"], c["false_unstable"]], [c["false_stable"], c["true_unstable"]]], dtype=float)
    total = mat.sum()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(mat, cmap="Blues", vmin=0, vmax=max(1.0, mat.max()))
    names = [["true stable", "false unstable"], ["false stable", "true unstable"]]
    for i in range(2):
        for j in range(2):
            pct = 100 * mat[i, j] / total if total else float("nan")
            color = "white" if mat[i, j] > 0.6 * mat.max() and mat.max() > 0 else "black"
            ax.text(j, i, f"{names[i][j]}\n{int(mat[i, j])}\n({pct:.1f} %)", ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks([0, 1], ["stable", "unstable"])
    ax.set_yticks([0, 1], ["stable", "unstable"])
    ax.set_xlabel(f"{mlip_label} (predicted)")
    ax.set_ylabel(f"{reference_label} (true)")
    acc = 100 * (mat[0, 0] + mat[1, 1]) / total if total else float("nan")
    tol = f", unstable below −{abs(tolerance_THz):g} THz" if tolerance_THz is not None else ""
    ax.set_title(f"Dynamical stability: accuracy {acc:.1f} %{tol}", fontsize=9)
    return _save(fig, path)


# --- band structures -------------------------------------------------------------------------------


def _segments(distances: np.ndarray, segment_nqpoints: Sequence[int] | None = None) -> list[slice]:
    """Slices of the path's segments: from ``segment_nqpoints`` when given, otherwise a new piece
    starts wherever the distance does not grow (phonopy repeats the distance where segments meet)."""
    if segment_nqpoints:
        ends = np.cumsum([0, *segment_nqpoints])
        if ends[-1] == len(distances):
            return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:]) if b > a]
    breaks = [0]
    for i in range(1, len(distances)):
        if distances[i] <= distances[i - 1] + 1e-12:
            breaks.append(i)
    breaks.append(len(distances))
    return [slice(a, b) for a, b in zip(breaks[:-1], breaks[1:]) if b > a]


def _ticks(bands: Mapping | Any, distances: np.ndarray) -> tuple[list[float], list[str]]:
    """Tick positions and names of the path's special points.

    ``labels`` is either one entry per q-point (None/'' where unlabelled) or phonopy's convention:
    per segment its start point, plus its end point where the path is not connected to the next
    segment (``path_connections``); labels of points at the same distance are joined ("X|K").
    """
    labels = get_field(bands, "labels")
    seg_labels = get_field(bands, "segment_labels")
    if not labels and not seg_labels:
        return [], []
    labels = list(labels or [])
    pos: list[float] = []
    names: list[str] = []
    segs = _segments(distances, get_field(bands, "segment_nqpoints"))
    if seg_labels and len(seg_labels) == len(segs):  # every segment's two ends: every special point
        for sl, ends in zip(segs, seg_labels):
            for idx, name in ((sl.start, ends[0]), (sl.stop - 1, ends[1])):
                if name:
                    pos.append(float(distances[idx]))
                    names.append(str(name))
    elif len(labels) == len(distances):
        for d, lab in zip(distances, labels):
            if lab:
                pos.append(float(d))
                names.append(str(lab))
    else:
        segs = _segments(distances, get_field(bands, "segment_nqpoints"))
        conn = list(get_field(bands, "path_connections") or [])
        if len(conn) != len(segs):  # assume one unbroken path: start of each segment, end of the last
            conn = [True] * (len(segs) - 1) + [False]
        k = 0
        for sl, connected in zip(segs, conn):
            for idx, take in ((sl.start, True), (sl.stop - 1, not connected)):
                if take and k < len(labels):
                    pos.append(float(distances[idx]))
                    names.append(str(labels[k]))
                    k += 1
    merged: dict[float, list[str]] = {}
    for p, n in zip(pos, names):
        key = round(p, 8)
        if n not in merged.setdefault(key, []):
            merged[key].append(n)
    pretty = {"GAMMA": "Γ", "G": "Γ", "\\Gamma": "Γ", "$\\Gamma$": "Γ"}
    return list(merged), ["|".join(pretty.get(n, n) for n in v) for v in merged.values()]


def band_structure_plot(
    reference_bands: Mapping | Any,
    mlip_bands: Mapping | Any,
    path: str | Path,
    *,
    title: str | None = None,
    reference_label: str = "reference",
    mlip_label: str = "MLIP",
) -> Path:
    """MLIP phonon band structure (dashed) over the reference's (solid) on the same path.

    Each band structure is a dict (or object) with ``distances`` [nq], ``frequencies`` [nq, nbands]
    in THz and optionally ``labels`` (one per q-point, None where unlabelled, or one per path end).
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    handles: list[Line2D] = []
    for bands, style, label in (
        (reference_bands, dict(color="black", lw=1.1, ls="-"), reference_label),
        (mlip_bands, dict(color="tab:red", lw=1.0, ls="--"), mlip_label),
    ):
        d = np.asarray(get_field(bands, "distances"), dtype=float)
        f = np.asarray(get_field(bands, "frequencies"), dtype=float)
        for sl in _segments(d, get_field(bands, "segment_nqpoints")):
            ax.plot(d[sl], f[sl], **style)
        handles.append(Line2D([], [], label=label, **style))
    d = np.asarray(get_field(reference_bands, "distances"), dtype=float)
    pos, names = _ticks(reference_bands, d)
    if pos:
        ax.set_xticks(pos, names)
        for p in pos:
            ax.axvline(p, color="0.8", lw=0.6, zorder=0)
    else:
        ax.set_xticks([])
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlim(d.min(), d.max())
    ax.set_ylabel("Frequency (THz)")
    ax.legend(handles=handles, fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def bands_plot(bands: Mapping | Any, path: str | Path, *, title: str | None = None, label: str = "MLIP",
               tolerance_THz: float | None = None) -> Path:
    """One phonon band structure (a screened material), every high-symmetry point labelled, with
    the stability tolerance drawn when given."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    d = np.asarray(get_field(bands, "distances"), dtype=float)
    f = np.asarray(get_field(bands, "frequencies"), dtype=float)
    for sl in _segments(d, get_field(bands, "segment_nqpoints")):
        ax.plot(d[sl], f[sl], color="tab:red", lw=1.0)
    pos, names = _ticks(bands, d)
    ax.set_xticks(pos, names) if pos else ax.set_xticks([])
    for p in pos:
        ax.axvline(p, color="0.8", lw=0.6, zorder=0)
    ax.axhline(0.0, color="0.6", lw=0.6)
    if tolerance_THz is not None:
        ax.axhline(tolerance_THz, color="tab:blue", lw=0.8, ls=":", label=f"unstable below {tolerance_THz:g} THz")
        ax.legend(fontsize=7, loc="best")
    ax.set_xlim(d.min(), d.max())
    ax.set_ylabel("Frequency (THz)")
    ax.set_title(f"{title + ': ' if title else ''}{label}", fontsize=10)
    return _save(fig, path)


def min_frequency_plot(rows: Sequence[Mapping], path: str | Path, *, tolerance_THz: float = -0.5) -> Path:
    """Lowest frequency (THz) of each screened material, stable ones above the tolerance line."""
    rows = [r for r in rows if r.get("min_frequency_THz") is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(rows) + 2), 3.6))
    x = np.arange(len(rows))
    vals = np.array([r["min_frequency_THz"] for r in rows], dtype=float)
    colors = ["tab:green" if v >= tolerance_THz else "tab:red" for v in vals]
    ax.bar(x, vals, color=colors)
    ax.axhline(tolerance_THz, color="tab:blue", lw=0.8, ls=":")
    ax.set_xticks(x, [str(r["material_id"]) for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("lowest frequency (THz)")
    n_stable = int(np.sum(vals >= tolerance_THz))
    ax.set_title(f"Dynamical stability: {n_stable} of {len(rows)} stable (unstable below {tolerance_THz:g} THz)",
                 fontsize=9)
    return _save(fig, path)


# --- polymorphs -------------------------------------------------------------------------------------


def polymorph_plot(
    result: Mapping | Any,
    path: str | Path,
    *,
    offset_meV: float | None = None,
    reference_label: str = "reference",
    mlip_label: str = "MLIP",
) -> Path:
    """ΔH (x) against ΔA_vib (y) of every non-ground-state polymorph, in meV/atom, with the
    reference's ΔA_vib (filled) and the MLIP's (open) joined by a thin line, and the line
    y = −x + offset: polymorphs below it have ΔA = ΔH + ΔA_vib < offset (transition candidates)."""
    rows = list(get_field(result, "rows", []))
    offset = float(offset_meV if offset_meV is not None else get_field(result, "offset_meV", 10.0))
    temperature = get_field(result, "temperature")
    dh = np.array([get_field(r, "dH_meV") for r in rows], dtype=float)
    yr = np.array([get_field(r, "dA_vib_reference_meV") for r in rows], dtype=float)
    ym = np.array([get_field(r, "dA_vib_mlip_meV") for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(5.0, 4.2))
    if rows:
        for x, a, b in zip(dh, yr, ym):
            ax.plot([x, x], [a, b], color="0.75", lw=0.7, zorder=1)
        ax.scatter(dh, yr, s=22, color="black", label=reference_label, zorder=3)
        ax.scatter(dh, ym, s=30, facecolors="none", edgecolors="tab:red", label=mlip_label, zorder=4)
        if len(rows) <= ANNOTATE_MAX:
            for r, x, a in zip(rows, dh, yr):
                ax.annotate(str(get_field(r, "material_id")), (x, a), xytext=(4, 2), textcoords="offset points", fontsize=6)
        xs = np.concatenate([dh, [0.0, offset]])
        ys = np.concatenate([yr, ym, [0.0]])
    else:
        xs, ys = np.array([0.0, offset]), np.array([-offset, 0.0])
    xlo, xhi = min(0.0, xs.min()) - 2, xs.max() * 1.1 + 2
    ylo, yhi = ys.min() - 0.1 * np.ptp(ys) - 2, ys.max() + 0.1 * np.ptp(ys) + 2
    xl = np.linspace(xlo, xhi, 2)
    ax.plot(xl, -xl + offset, color="tab:blue", lw=1.0, label=f"y = −x + {offset:g}")
    ax.fill_between(xl, np.full(2, min(ylo, (-xl + offset).min())), -xl + offset, color="tab:blue", alpha=0.08)
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(ylo, yhi)
    ax.axhline(0, color="0.8", lw=0.6, zorder=0)
    ax.set_xlabel("ΔH (meV/atom)")
    ax.set_ylabel("ΔA$_{vib}$ (meV/atom)")
    tag = f" at {temperature_label(temperature)} K" if temperature is not None else ""
    n_common, n_ref, n_mlip = get_field(result, "n_common"), get_field(result, "n_reference"), get_field(result, "n_mlip")
    extra = (f": transitions reference {n_ref}, MLIP {n_mlip}, in common {n_common}"
             if None not in (n_common, n_ref, n_mlip) else "")
    ax.set_title(f"Polymorphs{tag}{extra}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


# --- learning curve ----------------------------------------------------------------------------------


def learning_curve_plot(curve: Sequence[Mapping | Any], path: str | Path, *, title: str | None = None,
                        fitted_energies: bool = False) -> Path:
    """Losses (top) and validation force errors (bottom, meV/Å, log scales) per epoch.

    ``curve`` is a list of per-epoch dicts or models (e.g. TrainingDoc.learning_curve) with
    ``epoch`` and numeric metrics; keys containing "loss" go to the top panel, the force errors
    to the bottom (energy errors too with ``fitted_energies``: a model trained with an energy
    weight). Where ``stage`` changes a vertical line is drawn.
    """
    recs = [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in curve]
    if not recs:
        raise ValueError("learning curve is empty")
    keys = sorted({k for r in recs for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    keys = [k for k in keys if k not in ("epoch", "time")]
    loss_keys = [k for k in keys if "loss" in k]
    # the errors of what is trained: forces (the recipe fits forces only, energy weight 0); energy
    # errors of such a fit are meaningless and only shown when the run also fitted energies
    err_keys = [k for k in keys if k not in loss_keys and "force" in k]
    if fitted_energies:
        err_keys += [k for k in keys if k not in loss_keys and "energy" in k]
    fig, axes = plt.subplots(2, 1, figsize=(5.5, 5.5), sharex=True)
    for ax, group in zip(axes, (loss_keys, err_keys)):
        for k in group:
            pts = [(r["epoch"], r[k]) for r in recs if isinstance(r.get(k), (int, float)) and r.get("epoch") is not None]
            pts = [(e, v) for e, v in pts if v is not None and v > 0 and math.isfinite(v)]
            if pts:
                e, v = zip(*pts)
                ax.plot(e, v, marker="o", ms=2.5, lw=1.0, label=k)
        if ax.lines:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
    stages = [(r.get("epoch"), r.get("stage")) for r in recs]
    for (e0, s0), (e1, s1) in zip(stages[:-1], stages[1:]):
        if s0 is not None and s1 is not None and s0 != s1 and e1 is not None:
            for ax in axes:
                ax.axvline(e1 - 0.5, color="0.5", ls=":", lw=0.8)
            axes[0].text(e1, 1.0, f" stage {s1}", transform=axes[0].get_xaxis_transform(), fontsize=7, va="bottom")
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel("validation error (force meV/Å, energy meV/atom)" if fitted_energies
                       else "validation force error (meV/Å)")
    axes[1].set_xlabel("epoch")
    if title:
        axes[0].set_title(title, fontsize=9)
    return _save(fig, path)


# --- all figures of a benchmark ----------------------------------------------------------------------


def write_benchmark_figures(
    doc: BenchmarkDoc,
    output_dir: str | Path,
    *,
    frequency_pairs: tuple[Sequence[float], Sequence[float]] | None = None,
    band_pairs: Mapping[str, tuple[Any, Any]] | None = None,
    learning_curve: Sequence[Mapping | Any] | None = None,
) -> dict[str, str]:
    """Write every figure the benchmark has data for into ``output_dir``; returns name -> file name.

    ``frequency_pairs`` are the pooled (reference, MLIP) frequencies, THz (not kept in the doc);
    ``band_pairs`` maps a material id to (reference bands, MLIP bands); thermal parity plots,
    the confusion matrix and polymorph plots come from the doc itself.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = dict(reference_label=doc.reference_label, mlip_label=doc.mlip_label)
    figures: dict[str, str] = {}

    def put(name: str, filename: str, func, *args, **kwargs):
        func(*args, path=out / filename, **kwargs)
        figures[name] = filename

    if frequency_pairs is not None and len(frequency_pairs[0]):
        put("parity_frequency", "parity_frequency.png", parity_plot, frequency_pairs[0], frequency_pairs[1],
            quantity="frequency", unit="THz", title="Phonon frequencies, full dispersions", **labels)
    quantities = (
        ("A_vib", "A_vib_reference", "A_vib_mlip", "A$_{vib}$", "meV/atom"),
        ("Cv", "Cv_reference", "Cv_mlip", "C$_V$", "J/(K·mol of atoms)"),
        ("S_vib", "S_reference", "S_mlip", "S$_{vib}$", "J/(K·mol of atoms)"),
    )
    for key in doc.temperatures:
        pairs = [m.thermal[key] for m in doc.materials if key in m.thermal]
        if not pairs:
            continue
        t = temperature_label(key)
        for name, rk, mk, q, unit in quantities:
            put(f"parity_{name}_{t}K", f"parity_{name}_{t}K.png", parity_plot,
                [getattr(p, rk) for p in pairs], [getattr(p, mk) for p in pairs],
                quantity=q, unit=unit, title=f"{q} at {t} K", **labels)
    if doc.stability is not None and doc.stability.total:
        put("confusion_stability", "confusion_stability.png", confusion_matrix_plot, doc.stability.counts,
            tolerance_THz=doc.stability.tolerance_THz, **labels)
    for mid, (ref_b, mlip_b) in (band_pairs or {}).items():
        formula = next((m.formula for m in doc.materials if m.material_id == mid), "")
        put(f"bands_{mid}", f"bands_{safe_name(mid)}.png", band_structure_plot, ref_b, mlip_b,
            title=f"{formula} ({mid})" if formula else mid, **labels)
    for key, res in doc.polymorphs.items():
        if res.rows:
            t = temperature_label(key)
            put(f"polymorphs_{t}K", f"polymorphs_{t}K.png", polymorph_plot, res, **labels)
    if learning_curve:
        put("learning_curve", "learning_curve.png", learning_curve_plot, learning_curve,
            title=f"Training of {doc.mlip_label}")
    return figures


# --- the paper-metrics table ---------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}g}"


def paper_metrics(doc: BenchmarkDoc, paper: PaperNumbers = PAPER_NUMBERS) -> list[dict[str, Any]]:
    """Rows ``{"metric", "unit", "this_run", "paper"}`` comparing this benchmark with the paper.

    ``this_run`` / ``paper`` are numbers (or "16/19"-style strings for polymorph agreement), None
    when not available. C_v and S_vib are compared in the paper's unit, J/(K·mol) per mole of
    primitive cells (the per-atom values follow, without a paper number); the first row says the
    NAC treatment of both sides (the paper's comparison has none).
    """
    rows: list[dict[str, Any]] = []

    def add(metric, unit, ours, theirs):
        rows.append({"metric": metric, "unit": unit, "this_run": ours, "paper": theirs})

    def metric(t: str, name: str, what: str = "mae"):
        th = doc.thermal.get(t)
        reg = getattr(th, name, None) if th else None
        return getattr(reg, what) if reg is not None else None

    add("NAC (both sides)", "", doc.nac, paper.nac)
    add("frequency MAE", "THz", doc.frequency.mae if doc.frequency else None, paper.frequency_mae_THz)
    add("frequency R²", "", doc.frequency.r2 if doc.frequency else None, paper.frequency_r2)
    temps = sorted({temperature_key(t) for t in [*doc.temperatures, *paper.A_vib_mae_meV_per_atom]},
                   key=temperature_value)
    cell, atoms = "J/(K·mol of primitive cells)", "J/(K·mol of atoms)"
    for t in temps:
        k = temperature_label(t)
        add(f"A_vib MAE {k} K", "meV/atom", metric(t, "A_vib"), paper.A_vib_mae_meV_per_atom.get(t))
        add(f"A_vib R² {k} K", "", metric(t, "A_vib", "r2"), paper.A_vib_r2.get(t))
        add(f"C_v MAE {k} K", cell, metric(t, "Cv_cell"), paper.Cv_mae_J_per_K_mol_cell.get(t))
        add(f"S_vib MAE {k} K", cell, metric(t, "S_vib_cell"), paper.S_vib_mae_J_per_K_mol_cell.get(t))
    for t in temps:
        k = temperature_label(t)
        add(f"C_v MAE {k} K (per atom)", atoms, metric(t, "Cv"), None)
        add(f"S_vib MAE {k} K (per atom)", atoms, metric(t, "S_vib"), None)
    st = doc.stability
    tol = f" (−{abs(st.tolerance_THz):g} THz)" if st else ""
    add(f"stability accuracy{tol}", "%", st.accuracy_percent if st else None, paper.stability_accuracy_percent)
    val = doc.forces.get("validation")
    add("force MAE (validation)", "meV/Å", val.mae_meV_per_A if val else None, paper.force_mae_meV_per_A)
    tr = doc.forces.get("training")
    add("force MAE (training set)", "meV/Å", tr.mae_meV_per_A if tr else None, paper.train_force_mae_meV_per_A)
    for name, fb in doc.forces.items():
        if name not in ("validation", "training"):
            add(f"force MAE ({name})", "meV/Å", fb.mae_meV_per_A, None)
    ptemps = sorted({temperature_key(t) for t in [*doc.polymorphs, *paper.polymorph_agreement]}, key=temperature_value)
    for t in ptemps:
        k = temperature_label(t)
        res = doc.polymorphs.get(t)
        pp = paper.polymorph_agreement.get(t)
        add(f"polymorph transitions, reference {k} K", "", res.n_reference if res else None, pp[1] if pp else None)
        add(f"polymorph transitions, MLIP {k} K", "", res.n_mlip if res else None,
            paper.polymorph_transitions_mlip.get(t))
        add(f"polymorph transitions in common {k} K", "", f"{res.n_common}/{res.n_reference}" if res else None,
            f"{pp[0]}/{pp[1]}" if pp else None)
        dav = res.dA_vib_metrics if res else None
        add(f"ΔA_vib MAE {k} K", "meV/atom", dav.mae if dav else None, paper.dA_vib_mae_meV_per_atom.get(t))
        add(f"ΔA_vib R² {k} K", "", dav.r2 if dav else None, paper.dA_vib_r2.get(t))
    add("materials", "", doc.n_materials, paper.n_test_materials)
    return rows


def paper_metrics_dict(doc: BenchmarkDoc, paper: PaperNumbers = PAPER_NUMBERS) -> dict[str, dict[str, Any]]:
    """:func:`paper_metrics` keyed by metric name: ``{metric: {"unit", "this_run", "paper"}}``."""
    return {r["metric"]: {k: v for k, v in r.items() if k != "metric"} for r in paper_metrics(doc, paper)}


def paper_metrics_table(doc: BenchmarkDoc, paper: PaperNumbers = PAPER_NUMBERS):
    """A rich Table of this run beside the paper's numbers."""
    from rich.table import Table

    from rich.markup import escape

    # escape: a label like "mace [a0b78a03dc]" would otherwise be read as rich markup and vanish
    table = Table(title=escape(f"{doc.mlip_label} vs {doc.reference_label}: this run and the paper "
                               f"(NAC: {doc.nac} on both sides; the paper: none)"))
    table.add_column("metric")
    table.add_column("unit")
    table.add_column("this run", justify="right")
    table.add_column("paper", justify="right")
    for r in paper_metrics(doc, paper):
        table.add_row(r["metric"], r["unit"], _fmt(r["this_run"]), _fmt(r["paper"]))
    if not doc.reference_is_dft:
        table.caption = "The reference is not DFT: the paper compares against DFT (PBE)."
    return table


def render_paper_metrics(doc: BenchmarkDoc, paper: PaperNumbers = PAPER_NUMBERS, width: int = 100) -> str:
    """The paper-metrics table as plain text."""
    from rich.console import Console

    console = Console(width=width, color_system=None, force_terminal=False, highlight=False)
    with console.capture() as cap:
        console.print(paper_metrics_table(doc, paper))
    return cap.get()
