"""`phonon-flows import DIR`: JSON summary on stdout, reference PhononDoc in the store."""

from __future__ import annotations

import json

import pytest
from _phonopy_reference import DFT, phonopy_load, reference_numbers
from typer.testing import CliRunner

from phonon_flows.cli import app
from phonon_flows.store import get_store

KEYS = {"formula", "natom_primitive", "thermal", "min_frequency_THz", "dynamically_stable"}
THERMAL_KEYS = {"A_vib_meV_per_atom", "Cv_J_per_K_mol", "S_J_per_K_mol"}


def _invoke(*args):
    result = CliRunner().invoke(app, list(args))
    return result


def test_import_json_is_exactly_the_summary(shared_data, tmp_path):
    folder = shared_data.joinpath(*DFT, "MgO")
    store_dir = tmp_path / "store"
    result = _invoke("import", str(folder), "--json", "--store-dir", str(store_dir))
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)  # nothing else on stdout
    assert set(out) == KEYS
    assert out["formula"] == "MgO" and out["natom_primitive"] == 2
    assert set(out["thermal"]) == {"300", "1000"}
    ref = reference_numbers(phonopy_load(folder, tmp_path))
    for key in ("300", "1000"):
        assert set(out["thermal"][key]) == THERMAL_KEYS
        for field in THERMAL_KEYS:
            assert isinstance(out["thermal"][key][field], float)
            assert out["thermal"][key][field] == pytest.approx(ref["thermal"][key][field], rel=1e-6)
    assert out["dynamically_stable"] is True
    assert out["min_frequency_THz"] == pytest.approx(min(ref["mesh_frequencies"].min(), ref["band_frequencies"].min()),
                                                     abs=1e-6)

    # stored as a reference PhononDoc, large data in the data store
    store = get_store(store_dir=store_dir)
    store.connect()
    doc = store.query_one({"output.formula": "MgO"}, load=False)
    assert doc["output"]["engine"]["kind"] == "imported"
    assert doc["output"]["thermal"]["T300"]["S_J_per_K_mol"] == pytest.approx(out["thermal"]["300"]["S_J_per_K_mol"])
    assert doc["output"]["band_structure"]["store"] == "data"


def test_import_options(shared_data, tmp_path):
    folder = shared_data.joinpath(*DFT, "NaCl")
    result = _invoke("import", str(folder), "--json", "--no-store", "--temperatures", "500, 100",
                     "--mesh-length", "30", "--cutoff", "0.2", "--tolerance", "-0.5")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out["thermal"]) == ["500", "100"]
    ph = phonopy_load(folder, tmp_path)
    ref = reference_numbers(ph, temperatures=(500.0, 100.0), mesh_length=30, cutoff=0.2)
    assert out["thermal"]["100"]["Cv_J_per_K_mol"] == pytest.approx(ref["thermal"]["100"]["Cv_J_per_K_mol"], rel=1e-6)
    # a positive tolerance declares even a stable crystal unstable: the option is applied
    strict = _invoke("import", str(folder), "--json", "--no-store", "--tolerance", "0.5")
    assert strict.exit_code == 0, strict.stderr
    assert json.loads(strict.stdout)["dynamically_stable"] is False


def test_import_table_and_errors(shared_data, tmp_path):
    result = _invoke("import", str(shared_data.joinpath(*DFT, "Si")), "--store-dir", str(tmp_path / "s"))
    assert result.exit_code == 0, result.stderr
    assert "Si" in result.stdout and "A_vib at 300 K" in result.stdout and "stored in" in result.stderr
    assert " as job " in result.stderr  # which store and which job, on stderr

    bad = _invoke("import", str(tmp_path), "--json", "--no-store")
    assert bad.exit_code == 1
    assert bad.stdout == ""
    assert bad.stderr.startswith("error: InputError:") and str(tmp_path) in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    bad_t = _invoke("import", str(tmp_path), "--temperatures", "hot")
    assert bad_t.exit_code != 0
