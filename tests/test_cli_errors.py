"""Answers that are errors, not empty tables; commands that say what they did. Driven through the
`phonon-flows` commands as the README shows them, on the real phonopy data in tests/data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ase.build import bulk
from typer.testing import CliRunner

from phonon_flows.cli import app
from phonon_flows.flows import ScreeningMaker
from phonon_flows.runner import run_campaign
from phonon_flows.store import get_store
from test_fireworks_failures import write_cifs

SI = Path(__file__).resolve().parent / "data" / "dft-phonons" / "Si"


def _invoke(*args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(app, [str(a) for a in args])
    res.caught = [w for w in caught if issubclass(w.category, FutureWarning)]
    return res


def test_import_reuses_identical_documents_and_names_the_store(tmp_path):
    store_dir = tmp_path / "store"
    first = _invoke("import", SI, "--store-dir", store_dir, "--database", "mine", "--json")
    assert first.exit_code == 0, first.output
    assert set(json.loads(first.stdout)) == {"formula", "natom_primitive", "thermal", "min_frequency_THz",
                                             "dynamically_stable"}  # --json keeps its keys
    assert "stored in the embedded store" in first.stderr and str(store_dir) in first.stderr
    assert not first.caught, [str(w.message) for w in first.caught]  # no jobflow FutureWarning
    again = _invoke("import", SI, "--store-dir", store_dir, "--database", "mine")
    assert again.exit_code == 0 and "already in the embedded store" in again.stderr, again.output
    store = get_store(store_dir=store_dir, database="mine")
    store.connect()
    assert store.docs_store.count({"output.formula": "Si"}) == 1
    store.close()


def test_query_errors(tmp_path):
    store_dir = tmp_path / "store"
    assert _invoke("import", SI, "--store-dir", store_dir).exit_code == 0
    ok = _invoke("query", "--store-dir", store_dir, "-T", "1000", "--sort", "-S_vib")
    assert ok.exit_code == 0 and "Si" in ok.stdout
    hot = _invoke("query", "--store-dir", store_dir, "-T", "500")
    assert hot.exit_code == 1 and "computed at 300, 1000 K" in hot.stderr, hot.output
    bogus = _invoke("query", "--store-dir", store_dir, "--sort", "bogus")
    assert bogus.exit_code != 0 and "bogus" in bogus.output and "S_vib" in bogus.output
    missing = tmp_path / "nonexistent" / "x"
    for cmd in (["query"], ["status"], ["report", "c"], ["model", "list"]):
        res = _invoke(*cmd, "--store-dir", missing)
        assert res.exit_code == 1 and "no store at" in res.stderr, (cmd, res.output)
    assert not missing.exists() and not missing.parent.exists()


def test_run_check_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cif = write_cifs(tmp_path / "in", {"Cu-fcc": bulk("Cu", "fcc", a=3.6), "Cu-hcp": bulk("Cu", "hcp", a=2.56, c=4.18)})
    res = _invoke("run", *cif, "--engine", "emt", "--holdout", "Cu-fcc", "--check", "--min-atoms", 8,
                  "--max-atoms", 40)
    assert res.exit_code == 0 and "2 material(s) ready" in res.stdout, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_run_committee_option_is_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cif = write_cifs(tmp_path / "in", {"Cu-fcc": bulk("Cu", "fcc", a=3.6), "Cu-hcp": bulk("Cu", "hcp", a=2.56, c=4.18)})
    common = ("--engine", "emt", "--check", "--min-atoms", 8, "--max-atoms", 40)
    res = _invoke("run", *cif, *common, "--holdout", "Cu-fcc", "--committee", 0)
    assert res.exit_code == 1 and "--committee must be between 1 and 16" in res.output, res.output
    res = _invoke("run", *cif, *common, "--screen", "--model", "my.model", "--committee", 2)
    assert res.exit_code == 1 and "--committee is for training campaigns" in res.output, res.output
    res = _invoke("run", *cif, *common, "--holdout", "Cu-fcc", "--committee", 3)
    assert res.exit_code == 0 and "2 material(s) ready" in res.stdout, res.output


def test_run_campaign_reports_refused_inputs(tmp_path):
    flow = ScreeningMaker(name="refusing", model="ab" * 32, model_elements=["Cu"], min_atoms=8, max_atoms=40).make(
        {"Au-fcc": bulk("Au", "fcc", a=4.08)})
    summary = run_campaign(flow, get_store(store_dir=tmp_path / "store"), progress=False, work_dir=tmp_path / "runs")
    assert [e.material_id for e in summary.input_failures] == ["Au-fcc"]
    assert "refused input: Au-fcc" in summary.render()
    assert repr(summary).startswith("RunSummary(campaign='refusing', jobs=1, done=1") and "1 inputs refused" in repr(summary)
    assert (tmp_path / "runs" / "refusing" / "flow.json").is_file()  # what `phonon-flows rerun` runs again
