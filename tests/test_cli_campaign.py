"""`phonon-flows run / status / query / report` on a tiny EMT campaign; exit codes and one-line
errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter
from typer.testing import CliRunner

from phonon_flows.cli import app

CAMPAIGN = "cli-emt"
R_GAS = 8.314462618


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:") or "Usage" in result.stderr, result.stderr
    return result.stderr


def _write(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    crystals = {
        "Cu-hcp": bulk("Cu", "hcp", a=2.56, c=4.18),
        "Au-fcc": bulk("Au", "fcc", a=4.08),
        "Cu-fcc": bulk("Cu", "fcc", a=3.61),
    }
    paths = {}
    for name, atoms in crystals.items():
        paths[name] = folder / f"{name}.cif"
        CifWriter(AseAtomsAdaptor.get_structure(atoms)).write_file(paths[name])
    return paths


def _run_args(files, store, work):
    return [
        "run", *files, "--name", CAMPAIGN, "--holdout", "Cu-fcc", "--engine", "emt", "--preset", "small",
        "--epochs", "2", "--n-perturbations", "4", "--min-atoms", "8", "--max-atoms", "40", "--fmax", "0.01",
        "--device", "cpu", "--store-dir", store, "--work-dir", work, "--no-progress",
    ]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """One campaign run through the CLI; the other tests read its store."""
    root = tmp_path_factory.mktemp("cli_campaign")
    files = _write(root / "structures")
    store, work = root / "store", root / "runs"
    result = _invoke(*_run_args(list(files.values()), store, work))
    return {"root": root, "files": files, "store": store, "work": work, "result": result}


@pytest.mark.slow
def test_run_prints_the_metrics_and_a_rerun_reuses_everything(campaign):
    result = campaign["result"]
    assert result.exit_code == 0, result.output
    assert "frequency MAE" in result.stdout and "paper" in result.stdout
    assert "NOT DFT" in result.output
    again = _invoke(*_run_args(list(campaign["files"].values()), campaign["store"], campaign["work"]))
    assert again.exit_code == 0, again.output
    assert " 0 run," in again.stderr and "reused from the store" in again.stderr


@pytest.mark.slow
def test_status_counts_by_state(campaign):
    result = _invoke("status", CAMPAIGN, "--store-dir", campaign["store"], "--json")
    assert result.exit_code == 0, result.output
    (status,) = json.loads(result.stdout)["campaigns"]
    assert status["campaign"] == CAMPAIGN and status["n_jobs"] == 13
    assert status["counts"] == {"done": 13, "failed": 0, "skipped": 0, "running": 0, "pending": 0}
    table = _invoke("status", "--store-dir", campaign["store"])
    assert table.exit_code == 0 and CAMPAIGN in table.stdout and "phonon-mlip" in table.stdout


@pytest.mark.slow
def test_query_filters_and_formats(campaign):
    store = campaign["store"]
    result = _invoke("query", "--campaign", CAMPAIGN, "--json", "--store-dir", store)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["engine"] for r in rows) == ["emt", "mace"]
    ref = next(r for r in rows if r["engine"] == "emt")
    assert ref["material_id"] == "Cu-fcc" and ref["dynamically_stable"] is True
    assert ref["Cv_J_per_K_mol_300K"] < 3 * R_GAS  # below the classical limit at 300 K
    mlip = _invoke("query", "--formula", "Cu", "--engine", "mace", "--csv", "--store-dir", store)
    assert mlip.exit_code == 0 and len(mlip.stdout.strip().splitlines()) == 2  # header + one row
    at_1000 = _invoke("query", "--engine", "emt", "-T", "1000", "--min-Cv", 24.5, "--json", "--store-dir", store)
    assert [r["material_id"] for r in json.loads(at_1000.stdout)] == ["Cu-fcc"]
    none = _invoke("query", "--chemsys", "Au", "--json", "--store-dir", store)  # Au was a training material
    assert none.exit_code == 0 and json.loads(none.stdout) == []
    table = _invoke("query", "--stable", "--store-dir", store)
    assert table.exit_code == 0 and "Cu-fcc" in table.stdout


@pytest.mark.slow
def test_report_writes_figures_and_tables(campaign, tmp_path):
    out = tmp_path / "report"
    result = _invoke("report", CAMPAIGN, "--out", out, "--store-dir", campaign["store"])
    assert result.exit_code == 0, result.output
    summary = (out / "summary.md").read_text()
    assert "NOT DFT" in summary and "Cu-fcc" in summary and "frequency MAE" in summary
    # the model's architecture beside its epochs (the small preset: 8x0e + 8x1o, r_max 4.5 Å, correlation 2)
    assert re.search(r"MACE model [0-9a-f]{12} \(8x0e \+ 8x1o, r_max 4\.5 Å, correlation 2, float64\): 2 epochs,", summary), summary
    assert (out / "paper_metrics.csv").is_file() and (out / "materials.csv").is_file()
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"parity_frequency.png", "confusion_stability.png", "learning_curve.png"} <= figures
    assert json.loads((out / "benchmark.json").read_text())["material_ids"] == ["Cu-fcc"]


def test_bad_input_gives_one_line_errors(tmp_path):
    files = _write(tmp_path / "s")
    store = tmp_path / "store"
    missing = _invoke("run", tmp_path / "nope.cif", "--engine", "emt", "--store-dir", store)
    assert "nope" in _one_line_error(missing)
    unknown = _invoke("run", *files.values(), "--engine", "emt", "--holdout", "Cu-bcc", "--store-dir", store)
    assert "Cu-bcc" in _one_line_error(unknown)
    engine = _invoke("run", *files.values(), "--engine", "dft-please", "--store-dir", store)
    assert "--engine" in _one_line_error(engine)
    no_model = _invoke("run", files["Cu-fcc"], "--screen", "--store-dir", store)
    assert "--model" in _one_line_error(no_model)
    status = _invoke("status", "no-such-campaign", "--store-dir", store)
    assert "no campaign 'no-such-campaign'" in _one_line_error(status)
    report = _invoke("report", "no-such-campaign", "--store-dir", store, "--out", tmp_path / "r")
    assert "no-such-campaign" in _one_line_error(report)
    empty_range = _invoke("query", "--min-A", 5, "--max-A", 1, "--store-dir", store)
    assert "range is empty" in _one_line_error(empty_range)
    both = _invoke("query", "--json", "--csv", "--store-dir", store)
    assert "exclude" in _one_line_error(both)
    submit = _invoke("submit", *files.values(), "--engine", "emt")
    assert "--launchpad" in _one_line_error(submit)


def test_check_lists_each_bad_input(tmp_path):
    files = _write(tmp_path / "s")
    broken = tmp_path / "s" / "broken.cif"
    broken.write_text("data_nothing\n")
    empty = tmp_path / "s" / "empty.vasp"
    empty.write_text("")
    result = _invoke("run", *files.values(), broken, empty, "--engine", "emt", "--holdout", "Cu-fcc", "--check",
                     "--min-atoms", "8", "--max-atoms", "40", "--store-dir", tmp_path / "store")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "broken" in result.stderr and "empty" in result.stderr
    assert "3 material(s) ready, 2 refused" in result.stdout
    ok = _invoke("run", *files.values(), "--engine", "emt", "--holdout", "Cu-fcc", "--check",
                 "--min-atoms", "8", "--max-atoms", "40", "--store-dir", tmp_path / "store")
    assert ok.exit_code == 0 and "3 material(s) ready, 0 refused" in ok.stdout
