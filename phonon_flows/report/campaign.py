"""The report of a training campaign, read back from the store: :func:`write_campaign_report`
writes the figures (parity plots, confusion matrix, bands, polymorphs, learning curve, drawn by
:mod:`phonon_flows.report.figures`) and the summary tables of a campaign into a folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobflow import JobStore

from phonon_flows.core.polymorphs import temperature_label
from phonon_flows.errors import InputError
from phonon_flows.makers.benchmark import BenchmarkMaker
from phonon_flows.report.figures import bands_plot, min_frequency_plot, paper_metrics, render_paper_metrics, safe_name
from phonon_flows.runner import campaign_docs, campaign_status
from phonon_flows.schemas.benchmark import BenchmarkDoc
from phonon_flows.store import metadata_criteria


# ---------------------------------------------------------------------------------------------
# reading a campaign back from the store
# ---------------------------------------------------------------------------------------------
def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not str(k).startswith("@")}


def stage_outputs(store: JobStore, campaign: str, stage: str, load: bool = False) -> list[dict[str, Any]]:
    """Outputs of the jobs of one stage of a campaign (highest index of each job), with ``_uuid``."""
    store.connect()
    best: dict[str, dict[str, Any]] = {}
    for d in store.query(metadata_criteria(campaign=campaign, stage=stage), properties=["uuid", "index", "output"],
                         load=load):
        if d["uuid"] not in best or d["index"] > best[d["uuid"]]["index"]:
            best[d["uuid"]] = d
    out = []
    for d in best.values():
        if isinstance(d.get("output"), dict):
            o = dict(d["output"])
            o["_uuid"] = d["uuid"]
            out.append(o)
    return out


def load_benchmark(store: JobStore, campaign: str) -> BenchmarkDoc | None:
    """The campaign's BenchmarkDoc, from its latest campaign record's benchmark job (or any)."""
    docs = campaign_docs(store, campaign)
    wanted = {j["uuid"] for d in docs for j in d.get("jobs", []) if j.get("stage") == "benchmark"}
    found = stage_outputs(store, campaign, "benchmark")
    chosen = [d for d in found if d["_uuid"] in wanted] or found
    if not chosen:
        return None
    return BenchmarkDoc.model_validate(_clean({k: v for k, v in chosen[0].items() if k != "_uuid"}))


@dataclass
class CampaignReport:
    """What :func:`write_campaign_report` wrote."""

    out_dir: Path
    files: dict[str, str] = field(default_factory=dict)
    benchmark: Any = None
    metrics_text: str | None = None
    reference_note: str | None = None


def _latest_per_material(docs: list[dict[str, Any]], campaign_uuids: set[str]) -> list[dict[str, Any]]:
    docs = [d for d in docs if not campaign_uuids or d["_uuid"] in campaign_uuids]
    by_mid: dict[str, dict[str, Any]] = {}
    for d in docs:
        by_mid[d.get("material_id") or d["_uuid"]] = d
    return list(by_mid.values())


def write_campaign_report(store: JobStore, campaign: str, out_dir: str | Path) -> CampaignReport:
    """Figures and summary tables of a training campaign, from the store, into ``out_dir``.

    Writes ``summary.md`` (what the reference is, the split, this run's metrics beside the
    paper's, per-material results, polymorphs, failures), ``paper_metrics.csv``,
    ``materials.csv``, ``benchmark.json`` and the PNG figures (recomputed from the stored phonon
    documents with the campaign's benchmark settings).
    """
    out = Path(out_dir)
    cdoc = _campaign_doc(store, campaign)
    if cdoc.get("campaign_type") == "screening":
        return write_screening_report(store, campaign, cdoc, out)
    uuids = {j["uuid"]: j for j in cdoc.get("jobs", [])}
    report = CampaignReport(out_dir=out, reference_note=cdoc.get("reference_note"))
    out.mkdir(parents=True, exist_ok=True)

    training = stage_outputs(store, campaign, "train")
    training = [t for t in training if t["_uuid"] in uuids] or training
    tdoc = training[0] if training else None
    bench = _benchmark_with_figures(store, campaign, cdoc, uuids, tdoc, out / "figures", report)
    report.benchmark = bench

    lines = _header_lines(campaign, cdoc, tdoc)
    if bench is not None:
        lines += _benchmark_section(bench, out, report)
    else:
        lines += ["No benchmark yet (the campaign has not finished, or nothing was held out).", ""]
    return _write_summary(lines, store, campaign, cdoc, out, report)


def _campaign_doc(store: JobStore, campaign: str) -> dict[str, Any]:
    """The latest CampaignDoc of ``campaign``; InputError when there is none."""
    docs = campaign_docs(store, campaign)
    if not docs:
        known = sorted({d["campaign"] for d in campaign_docs(store)})
        raise InputError(
            f"no campaign {campaign!r} in the store" + (f" (campaigns: {', '.join(known)})" if known else " (it is empty)")
        )
    return docs[0]


# ---------------------------------------------------------------------------------------------
# the report of a screening
# ---------------------------------------------------------------------------------------------
#: kinds of engine whose phonons a screening is benchmarked against when the store holds them
REFERENCE_KINDS = ("dft", "imported")


def write_screening_report(store: JobStore, campaign: str, cdoc: dict[str, Any], out: Path) -> CampaignReport:
    """The report of a screening: a table of the screened materials (stability, lowest frequency,
    thermal properties with units), the stability count, a figure of the lowest frequencies and
    one band structure per material; when the store holds imported or DFT phonons of screened
    materials (same structure hash, else same material id), the benchmark against them."""
    import pandas as pd

    report = CampaignReport(out_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    wanted = {j["uuid"] for j in cdoc.get("jobs", []) if j.get("stage") == "phonon-mlip"}
    docs = _latest_per_material(stage_outputs(store, campaign, "phonon-mlip", load=True), wanted)
    docs.sort(key=lambda d: str(d.get("material_id")))
    rows = [_screening_row(d) for d in docs]
    table = pd.DataFrame(rows)
    table.to_csv(out / "materials.csv", index=False)
    report.files["materials"] = str(out / "materials.csv")
    ok = [d for d in docs if not d.get("failed")]
    tol = next((d.get("stability_tolerance_THz") for d in ok if d.get("stability_tolerance_THz") is not None), -0.5)
    n_stable = sum(1 for d in ok if d.get("dynamically_stable"))
    lines = [f"# Screening {campaign}", "",
             f"- model: MACE {cdoc.get('model_sha256') or '?'}",
             f"- materials: {len(cdoc.get('screen_material_ids', []))} screened, "
             f"{len(cdoc.get('input_failures', []))} refused at the input checks",
             f"- relaxation with the model: {_relax_mode(cdoc)}",
             f"- dynamical stability (unstable below {tol:g} THz): {n_stable} stable, {len(ok) - n_stable} unstable, "
             f"{len(docs) - len(ok)} failed", "",
             "## Materials", "", _markdown(table), ""]
    if ok:
        min_frequency_plot(rows, figures / "stability.png", tolerance_THz=tol)
        report.files["stability"] = str(figures / "stability.png")
    for d in ok:
        if d.get("band_structure"):
            name = f"bands_{safe_name(d['material_id'])}.png"
            bands_plot(d["band_structure"], figures / name, title=f"{d.get('formula')} ({d['material_id']})",
                       label=f"MACE {str(cdoc.get('model_sha256') or '')[:8]}", tolerance_THz=tol)
            report.files[f"bands_{d['material_id']}"] = str(figures / name)
    refs = _reference_docs(store, ok)
    if refs:
        try:
            bench = BenchmarkMaker().benchmark([refs[m][0] for m in sorted(refs)], [refs[m][1] for m in sorted(refs)],
                                               None, output_dir=figures)
        except InputError as exc:
            lines += [f"Benchmark against the imported references not possible: {exc.reason}", ""]
        else:
            report.benchmark = bench
            for name, fname in bench.figures.items():
                report.files[name] = str(figures / fname)
            lines += [f"Benchmark against {len(refs)} imported/DFT reference(s) in the store: "
                      + ", ".join(sorted(refs)), ""]
            (out / "benchmark").mkdir(exist_ok=True)
            lines += _benchmark_section(bench, out / "benchmark", report)
    return _write_summary(lines, store, campaign, cdoc, out, report)


def _relax_mode(cdoc: dict[str, Any]) -> str:
    relax = (cdoc.get("settings") or {}).get("relax")
    if not relax:
        return "none (phonons on the structures as given)"
    return "positions and cell" if relax.get("relax_cell") else "positions (cell kept)"


def _screening_row(d: dict[str, Any]) -> dict[str, Any]:
    """One screened material: columns named with their units."""
    row = {"material_id": d.get("material_id"), "formula": d.get("formula"), "failed": bool(d.get("failed")),
           "dynamically_stable": d.get("dynamically_stable"), "min_frequency_THz": d.get("min_frequency_THz"),
           "zero_point_energy_meV_per_atom": d.get("zero_point_energy_meV_per_atom")}
    if d.get("committee_spread_THz") is not None:  # a committee model: its members' disagreement
        row["committee_spread_THz"] = d["committee_spread_THz"]
    for key, tp in sorted((d.get("thermal") or {}).items(), key=lambda kv: float(temperature_label(kv[0]))):
        t = temperature_label(key)
        row |= {f"A_vib_{t}K_meV_per_atom": tp.get("A_vib_meV_per_atom"),
                f"C_v_{t}K_J_per_K_mol_atoms": tp.get("Cv_J_per_K_mol"),
                f"S_vib_{t}K_J_per_K_mol_atoms": tp.get("S_J_per_K_mol")}
    if d.get("failed"):
        row["error"] = "; ".join(str(e) for e in d.get("errors") or []) or d.get("error")
    return row


def _reference_docs(store: JobStore, mlip_docs: list[dict[str, Any]]) -> dict[str, tuple[dict, dict]]:
    """material id -> (MLIP doc, reference doc) for the screened materials whose imported or DFT
    phonons are in the store (same structure hash, else same material id); the reference doc is
    given the screened material's id so that the benchmark pairs them."""
    store.connect()
    out: dict[str, tuple[dict, dict]] = {}
    for d in mlip_docs:
        crit = {"output.engine.kind": {"$in": list(REFERENCE_KINDS)}, "output.failed": {"$ne": True}}
        found = None
        for extra in ({"output.structure_hash": d.get("structure_hash")}, {"output.material_id": d.get("material_id")}):
            if next(iter(extra.values())):
                found = store.query_one({**crit, **extra}, properties=["output"], load=True)
                if found:
                    break
        if found:
            ref = {k: v for k, v in found["output"].items() if not str(k).startswith("@")}
            ref["material_id"] = d["material_id"]
            out[d["material_id"]] = ({k: v for k, v in d.items() if k != "_uuid"}, ref)
    return out


def _benchmark_with_figures(store, campaign, cdoc, uuids, tdoc, figures_dir: Path, report: CampaignReport):
    """The stored BenchmarkDoc (else one computed now) and the figures, recomputed from the
    stored phonon documents with the campaign's benchmark settings."""
    bench = load_benchmark(store, campaign)
    ref = _latest_per_material(stage_outputs(store, campaign, "phonon-reference", load=True),
                               {u for u, j in uuids.items() if j["stage"] == "phonon-reference"})
    mlip = _latest_per_material(stage_outputs(store, campaign, "phonon-mlip", load=True),
                                {u for u, j in uuids.items() if j["stage"] == "phonon-mlip"})
    if ref and mlip:
        settings = (cdoc.get("settings") or {}).get("benchmark") or {}
        fields = {k: v for k, v in settings.items() if not k.startswith("@")}
        maker = BenchmarkMaker(**{k: v for k, v in fields.items() if k in BenchmarkMaker.__dataclass_fields__})
        try:
            strip = lambda d: {k: v for k, v in d.items() if k != "_uuid"}  # noqa: E731
            fresh = maker.benchmark([strip(d) for d in mlip], [strip(d) for d in ref], tdoc, output_dir=figures_dir)
            bench = bench or fresh
            for name, fname in fresh.figures.items():
                report.files[name] = str(figures_dir / fname)
        except InputError as exc:
            report.files["figures_error"] = exc.reason
    return bench


def _header_lines(campaign: str, cdoc: dict[str, Any], tdoc: dict[str, Any] | None) -> list[str]:
    """Title, the reference's note, the split and the model."""
    lines = [f"# Campaign {campaign}", ""]
    if cdoc.get("reference_note"):
        lines += [f"**{cdoc['reference_note']}**", ""]
    lines += [
        f"- training materials ({len(cdoc.get('training_material_ids', []))}): "
        + ", ".join(cdoc.get("training_material_ids", [])),
        f"- held-out materials ({len(cdoc.get('holdout_material_ids', []))}): "
        + ", ".join(cdoc.get("holdout_material_ids", [])),
    ]
    if tdoc:
        hp = tdoc.get("hyperparameters") or {}
        lines.append(
            f"- MACE model {str(tdoc.get('model_sha256'))[:12]} ({hp.get('hidden_irreps')}, r_max {hp.get('r_max')} Å, "
            f"correlation {hp.get('correlation')}, {hp.get('default_dtype')}"
            + (f", committee of {len(tdoc['committee_seeds'])}, seeds {', '.join(map(str, tdoc['committee_seeds']))}"
               if tdoc.get("committee_seeds") else "")
            + f"): {hp.get('max_num_epochs')} epochs, "
            f"{tdoc.get('n_train')} training / {tdoc.get('n_valid')} validation structures, validation force MAE "
            f"{_num(tdoc.get('valid_force_mae'))} meV/Å, wall time {_num(tdoc.get('wall_time'))} s on {tdoc.get('device')}"
        )
    lines.append("")
    return lines


def _benchmark_section(bench: BenchmarkDoc, out: Path, report: CampaignReport) -> list[str]:
    """This run beside the paper, the held-out materials and the polymorphs; writes
    ``paper_metrics.csv``, ``materials.csv`` and ``benchmark.json``."""
    import pandas as pd

    rows = paper_metrics(bench)
    pd.DataFrame(rows).to_csv(out / "paper_metrics.csv", index=False)
    report.files["paper_metrics"] = str(out / "paper_metrics.csv")
    report.metrics_text = render_paper_metrics(bench)
    lines = ["## This run beside the paper", "",
             f"NAC: {bench.nac} on both sides (the paper compares without NAC). C_v and S_vib are compared per mole "
             "of primitive cells, the paper's unit; per-atom values follow. A_vib and ΔA_vib in meV/atom.", "",
             "| metric | unit | this run | paper |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['unit']} | {_num(r['this_run'])} | {_num(r['paper'])} |")
    if not bench.reference_is_dft:
        lines += ["", f"The reference here is {bench.reference_label}; the paper's numbers are against DFT (PBE)."]
    table = pd.DataFrame(_material_rows(bench))
    table.to_csv(out / "materials.csv", index=False)
    report.files["materials"] = str(out / "materials.csv")
    lines += ["", "## Held-out materials", "", _markdown(table), ""]
    lines += _polymorph_lines(bench)
    (out / "benchmark.json").write_text(bench.model_dump_json(indent=1))
    report.files["benchmark"] = str(out / "benchmark.json")
    return lines


def _material_rows(bench: BenchmarkDoc) -> list[dict[str, Any]]:
    """One row per held-out material (frequency MAE, stability, thermal properties both ways)."""
    mat_rows = []
    for m in bench.materials:
        row = {
            "material_id": m.material_id, "formula": m.formula,
            "frequency_mae_THz": m.frequency.mae if m.frequency else None,
            "min_frequency_reference_THz": m.min_frequency_reference_THz,
            "min_frequency_mlip_THz": m.min_frequency_mlip_THz,
            "stable_reference": m.stable_reference, "stable_mlip": m.stable_mlip,
            "enthalpy_per_atom_eV": m.enthalpy_per_atom_eV,
        }
        if m.committee_spread_THz is not None:  # a committee model: its members' disagreement, beside the error
            row["committee_spread_THz"] = m.committee_spread_THz
        for key, p in m.thermal.items():
            t = temperature_label(key)
            row |= {f"A_vib_ref_{t}K_meV_per_atom": p.A_vib_reference, f"A_vib_mlip_{t}K_meV_per_atom": p.A_vib_mlip,
                    f"Cv_ref_{t}K_J_per_K_mol_atoms": p.Cv_reference, f"Cv_mlip_{t}K_J_per_K_mol_atoms": p.Cv_mlip,
                    f"S_ref_{t}K_J_per_K_mol_atoms": p.S_reference, f"S_mlip_{t}K_J_per_K_mol_atoms": p.S_mlip}
        mat_rows.append(row)
    return mat_rows


def _polymorph_lines(bench: BenchmarkDoc) -> list[str]:
    """A table of the polymorphs per temperature and the transitions found."""
    lines: list[str] = []
    for key, res in bench.polymorphs.items():
        if not res.rows:
            continue
        t = temperature_label(key)
        lines += [f"## Polymorphs at {t} K (candidate when ΔA < {res.offset_meV:g} meV/atom)", "",
                  "| material | ground state | ΔH | ΔA_vib ref | ΔA_vib MLIP | ΔA ref | ΔA MLIP |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in res.rows:
            lines.append(f"| {r.material_id} | {r.ground_state_id} | {_num(r.dH_meV)} | {_num(r.dA_vib_reference_meV)} "
                         f"| {_num(r.dA_vib_mlip_meV)} | {_num(r.dA_reference_meV)} | {_num(r.dA_mlip_meV)} |")
        lines += ["", f"transitions: reference {res.n_reference}, MLIP {res.n_mlip}, in common {res.n_common}", ""]
    return lines


def _jobs_section(store: JobStore, campaign: str) -> list[str]:
    """The job counts of the campaign and its failures."""
    status = campaign_status(store, campaign)[0]
    lines = ["## Jobs", "", ", ".join(f"{k}: {v}" for k, v in status.counts.items()), ""]
    problems = status.input_failures + status.failures
    if problems:
        lines += ["## Failures", ""]
        for f in problems:
            lines.append(f"- {f.get('material_id')} ({f.get('stage')}): {f.get('reason')}")
        lines.append("")
    return lines


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def _markdown(df) -> str:
    if df.empty:
        return "(none)"
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        out.append("| " + " | ".join(_num(row[c]) for c in cols) + " |")
    return "\n".join(out)


def _write_summary(lines: list[str], store: Any, campaign: str, cdoc: dict, out: Path, report: Any) -> Any:
    """Close a report: the jobs section, the list of figures, ``summary.md`` and ``campaign.json``."""
    lines = lines + _jobs_section(store, campaign)
    figures = [Path(p).name for _, p in sorted(report.files.items()) if str(p).endswith(".png")]
    if figures:
        lines += ["## Figures", ""] + [f"- {name}" for name in figures]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    report.files["summary"] = str(out / "summary.md")
    (out / "campaign.json").write_text(json.dumps(_clean(cdoc), indent=1, default=str))
    report.files["campaign"] = str(out / "campaign.json")
    return report


__all__ = ["CampaignReport", "load_benchmark", "stage_outputs", "write_campaign_report"]
