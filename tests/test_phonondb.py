"""phonondb entries (real VASP PBEsol force sets, tests/data/phonondb/) against phonopy's own
numbers from the same files, their DFT force documents, and the import of a folder of entries."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from _phonopy_reference import reference_numbers

from phonon_flows.core import phonondb as pdb
from phonon_flows.errors import InputError
from phonon_flows.makers.phonondb import import_phonondb_entries, phonondb_force_docs
from phonon_flows.makers.phonons import import_phonopy_doc, phonondb_phonon_doc

DATA = Path(__file__).resolve().parent / "data" / "phonondb"
ENTRIES = {
    "mp-1000": "materials-id-1000-bate-fm-3m-225.tar.lzma",  # rock salt, BORN
    "mp-149": "materials-id-149-si-fd-3m-227.tar.lzma",  # diamond
    "mp-560588": "materials-id-560588-zns-p6-3mc-186.tar.lzma",  # wurtzite, no PRIMITIVE_AXIS, DIM 4 4 2
    "mp-684580": "materials-id-684580-agi-i-4m2-119.tar.lzma",  # body-centred tetragonal
}
RTOL = 1e-6
ATOL_THZ = 1e-6


def unpack(archive: Path, where: Path) -> Path:
    """The entry folder ``mp-<id>-20180417/`` of an archive, unpacked as distributed."""
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(where, filter="data")
    (folder,) = [p for p in where.iterdir() if p.is_dir()]
    return folder


def phonopy_load(folder: Path, born: bool):
    """phonopy.load of an unpacked entry, as phonondb's README says (phonopy's API only)."""
    import phonopy

    conf = (folder / "phonopy.conf").read_text().splitlines()
    values = {line.split("=")[0].strip(): line.split("=")[1].split() for line in conf if "=" in line}
    dim = [int(x) for x in values["DIM"]]
    pa = values.get("PRIMITIVE_AXIS")
    pmat = None if pa is None else np.array([eval(x) for x in pa], dtype=float).reshape(3, 3)  # noqa: S307 - "1/2"
    return phonopy.load(supercell_matrix=dim if len(dim) == 9 else np.diag(dim), primitive_matrix=pmat,
                        unitcell_filename=str(folder / "POSCAR-unitcell"),
                        force_sets_filename=str(folder / "FORCE_SETS"),
                        born_filename=str(folder / "BORN") if born else None, is_nac=born, log_level=0)


@pytest.fixture(scope="module")
def data_dir():
    if not all((DATA / f).is_file() for f in ENTRIES.values()):
        pytest.fail(f"phonondb test entries missing in {DATA}")  # shipped in the repository
    return DATA


@pytest.mark.parametrize("mp_id", list(ENTRIES))
@pytest.mark.parametrize("born", [True, False], ids=["born", "no-born"])
def test_entry_equals_phonopy_load(data_dir, tmp_path, mp_id, born):
    archive = data_dir / ENTRIES[mp_id]
    folder = unpack(archive, tmp_path)
    if not born:
        (folder / "BORN").unlink()
    ref = reference_numbers(phonopy_load(folder, born))
    # the archive as distributed when BORN is used, the unpacked folder without it
    doc = phonondb_phonon_doc(archive if born else folder)
    assert not doc.failed and doc.errors == []
    assert doc.material_id == mp_id
    assert doc.has_nac is born and doc.natom_primitive == ref["natom_primitive"]
    assert doc.mesh == ref["mesh"]
    for key in ("300", "1000"):  # doc.thermal answers to "300" as to its stored key "T300"
        for field in ("A_vib_meV_per_atom", "Cv_J_per_K_mol", "S_J_per_K_mol"):
            got = getattr(doc.thermal[key], field)
            assert got == pytest.approx(ref["thermal"][key][field], rel=RTOL, abs=1e-9), (mp_id, key, field)
    assert doc.zero_point_energy_meV_per_atom == pytest.approx(ref["zero_point_energy_meV_per_atom"], rel=RTOL)
    np.testing.assert_allclose(np.array(doc.band_structure.qpoints), ref["band_qpoints"], atol=1e-6)
    bands, ref_bands = np.array(doc.band_structure.frequencies), ref["band_frequencies"]
    # the three acoustic modes at Γ are zero up to how the acoustic sum rule is imposed: phonopy.load
    # leaves up to 1e-4 THz there on some cells, the symmetrized force constants here ~1e-7
    gamma = np.abs(ref_bands) < 1e-3
    assert gamma.sum() <= 3 * np.all(np.abs(np.array(doc.band_structure.qpoints)) < 1e-9, axis=1).sum()
    np.testing.assert_allclose(bands[gamma], ref_bands[gamma], atol=1e-4)
    np.testing.assert_allclose(bands[~gamma], ref_bands[~gamma], rtol=RTOL, atol=ATOL_THZ)
    assert doc.min_frequency_mesh_THz == pytest.approx(ref["mesh_frequencies"].min(), abs=1e-4)


def test_reference_doc_names_dft_pbesol_phonondb_and_license(data_dir):
    doc = import_phonopy_doc(data_dir / ENTRIES["mp-560588"])  # the import path of every phonopy folder
    e = doc.engine
    assert e.kind == "dft" and e.is_dft and e.name == "phonondb" and e.version == "2018-04-17"
    assert e.settings["xc"] == "PBEsol" and e.settings["code"] == "VASP" and e.settings["license"] == "CC-BY-4.0"
    assert e.settings["mp_id"] == "mp-560588" and e.label == "DFT (PBEsol, phonondb)"
    assert "2018-04-17" in e.provenance and "mp-560588" in e.provenance
    assert pdb.PHONONDB_ATTRIBUTION in e.provenance
    assert doc.formula == "ZnS" and doc.supercell_matrix == [[4, 0, 0], [0, 4, 0], [0, 0, 2]]
    assert doc.n_displacements == 6 and doc.fc_method == "finite-difference"
    assert doc.displacement_A == pytest.approx(0.01)


def test_force_docs_are_the_dft_force_sets(data_dir, tmp_path):
    folder = unpack(data_dir / ENTRIES["mp-1000"], tmp_path)
    docs = phonondb_force_docs(folder)
    fs = pdb.read_phonondb_entry(folder).force_sets
    assert len(docs) == len(fs["first_atoms"]) == 2
    for doc, disp in zip(docs, fs["first_atoms"], strict=True):
        assert doc.engine.kind == "dft" and doc.engine.settings["labels"] == "finite-displacement"
        assert doc.n_atoms == 64 and doc.material_id == "mp-1000"
        np.testing.assert_array_equal(np.array(doc.forces), disp["forces"])
        ph = pdb.phonondb_phonopy(pdb.read_phonondb_entry(folder), use_born=False)
        moved = np.array(doc.structure.cart_coords) - np.array(ph.supercell.positions)
        np.testing.assert_allclose(moved[disp["number"]], disp["displacement"], atol=1e-9)
        assert np.abs(np.delete(moved, disp["number"], axis=0)).max() < 1e-9
        assert 0 < doc.energy < 1e-3  # harmonic energy of one 0.01 Å displacement


def test_bad_entries_are_named(tmp_path, data_dir):
    bad = tmp_path / "materials-id-7-xx-fm-3m-225.tar.lzma"
    bad.write_bytes(b"not an archive")
    with pytest.raises(InputError, match="materials-id-7-xx-fm-3m-225.*cannot unpack"):
        pdb.read_phonondb_entry(bad)
    folder = unpack(data_dir / ENTRIES["mp-149"], tmp_path / "si")
    (folder / "FORCE_SETS").write_text("64\n1\n\n1\n 0.01 0 0\n 0 0 0\n")
    with pytest.raises(InputError, match="mp-149-20180417.*FORCE_SETS"):
        pdb.read_phonondb_entry(folder)
    (folder / "FORCE_SETS").unlink()
    with pytest.raises(InputError, match="missing FORCE_SETS"):
        pdb.read_phonondb_entry(folder)


def test_parse_phonopy_conf_dim_forms():
    smat, pmat = pdb.parse_phonopy_conf("DIM = 2 2 3\n")
    assert smat.tolist() == [[2, 0, 0], [0, 2, 0], [0, 0, 3]] and pmat is None
    smat, pmat = pdb.parse_phonopy_conf("DIM = -1 1 1 1 -1 1 1 1 -1\nPRIMITIVE_AXIS = 0 1/2 1/2 1/2 0 1/2 1/2 1/2 0")
    assert smat[0].tolist() == [-1, 1, 1] and pmat[0].tolist() == [0, 0.5, 0.5]
    with pytest.raises(InputError, match="DIM has 2 numbers"):
        pdb.parse_phonopy_conf("DIM = 2 2")


def test_folder_import_progress_failures_and_reuse(data_dir, tmp_path, capsys):
    from phonon_flows.makers.phonons import phonon_settings
    from phonon_flows.store import get_store

    folder = tmp_path / "entries"
    folder.mkdir()
    for name in (ENTRIES["mp-149"], ENTRIES["mp-1000"]):
        shutil.copy(data_dir / name, folder)
    (folder / "materials-id-99-bad-fm-3m-225.tar.lzma").write_bytes(b"broken")
    store = get_store(store_dir=str(tmp_path / "store"))
    settings = phonon_settings(temperatures=[300])
    paths = pdb.list_phonondb_entries(folder)
    assert len(paths) == 3
    first = import_phonondb_entries(paths, settings, store=store, summarize=lambda d: d.material_id)
    assert sorted(first.imported) == ["mp-1000", "mp-149"] and first.reused == []
    assert [e.material_id for e in first.failed] == ["mp-99"]
    assert "materials-id-99-bad-fm-3m-225" in first.failed[0].reason
    assert "importing phonondb entries" in capsys.readouterr().err  # the progress bar
    again = import_phonondb_entries(paths, settings, store=get_store(store_dir=str(tmp_path / "store")))
    assert again.imported == [] and sorted(again.reused) == ["mp-1000", "mp-149"]
    assert [e.material_id for e in again.failed] == ["mp-99"]


def test_cli_imports_a_folder_and_keeps_json_keys(data_dir, tmp_path):
    from typer.testing import CliRunner

    from phonon_flows.cli import app, import_summary

    folder = tmp_path / "entries"
    folder.mkdir()
    shutil.copy(data_dir / ENTRIES["mp-149"], folder)
    (folder / "materials-id-98-bad-fm-3m-225.tar.lzma").write_bytes(b"broken")
    runner = CliRunner()
    res = runner.invoke(app, ["import", str(folder), "--json", "--store-dir", str(tmp_path / "s")])
    assert res.exit_code == 2, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["material_id"] for r in out["imported"]] == ["mp-149"]
    assert out["failed"][0]["material_id"] == "mp-98"
    one = runner.invoke(app, ["import", str(data_dir / ENTRIES["mp-149"]), "--json", "--no-store"])
    assert one.exit_code == 0, one.output
    summary = json.loads(one.stdout.strip().splitlines()[-1])
    doc = phonondb_phonon_doc(data_dir / ENTRIES["mp-149"])
    assert set(summary) == set(import_summary(doc)) == set(out["imported"][0]) - {"material_id"}
