"""Imported DFT phonopy folders (the shared real VASP force sets) against phonopy's own numbers."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from _phonopy_reference import DFT, MATERIALS, phonopy_load, reference_numbers

from phonon_flows.core.phonopy_io import load_phonopy_folder
from phonon_flows.errors import InputError
from phonon_flows.makers.phonons import import_phonopy_doc, phonon_settings

RTOL = 1e-6
ATOL_THZ = 1e-6  # acoustic modes at Γ are numerically ~1e-7 THz: no relative tolerance for them


@pytest.fixture(scope="module")
def imported(shared_data, tmp_path_factory):
    """PhononDoc and phonopy's own reference numbers of each shared DFT folder (computed once)."""
    out = {}
    tmp = tmp_path_factory.mktemp("phonopy-ref")
    for name in MATERIALS:
        folder = shared_data.joinpath(*DFT, name)
        doc = import_phonopy_doc(folder)
        ref = reference_numbers(phonopy_load(folder, tmp))
        out[name] = (doc, ref)
    return out


@pytest.mark.parametrize("name", MATERIALS)
def test_imported_doc_equals_phonopy(imported, name):
    doc, ref = imported[name]
    assert not doc.failed, doc.errors
    assert doc.errors == []
    assert doc.engine.kind == "imported" and doc.engine.provenance.endswith(name)
    assert doc.natom_primitive == ref["natom_primitive"] == 2
    # phonopy's length mode gives the same mesh as the paper's formula on these cubic cells
    assert doc.mesh == ref["mesh"]
    for key in ("300", "1000"):
        for field in ("A_vib_meV_per_atom", "Cv_J_per_K_mol", "S_J_per_K_mol"):
            got = getattr(doc.thermal[key], field)
            assert got == pytest.approx(ref["thermal"][key][field], rel=RTOL), (name, key, field)
        assert doc.thermal[key].temperature_K == float(key)
    assert doc.zero_point_energy_meV_per_atom == pytest.approx(ref["zero_point_energy_meV_per_atom"], rel=RTOL)
    bands = np.array(doc.band_structure.frequencies)
    np.testing.assert_allclose(np.array(doc.band_structure.qpoints), ref["band_qpoints"], atol=1e-12)
    np.testing.assert_allclose(bands, ref["band_frequencies"], rtol=RTOL, atol=ATOL_THZ)
    assert doc.min_frequency_mesh_THz == pytest.approx(ref["mesh_frequencies"].min(), abs=ATOL_THZ)
    assert doc.min_frequency_band_THz == pytest.approx(ref["band_frequencies"].min(), abs=ATOL_THZ)
    assert doc.min_frequency_THz == min(doc.min_frequency_mesh_THz, doc.min_frequency_band_THz)


@pytest.mark.parametrize("name", ["Si", "MgO"])
def test_si_and_mgo_are_dynamically_stable(imported, name):
    doc, _ = imported[name]
    assert doc.dynamically_stable is True
    assert doc.stability_tolerance_THz == -0.5
    assert doc.min_frequency_THz > -0.01  # only the acoustic modes at Γ come near zero
    assert doc.most_negative_mode.frequency_THz == doc.min_frequency_THz


def test_import_records_files_nac_and_method(imported):
    si, _ = imported["Si"]
    assert si.engine.settings["files"] == ["phonopy_disp.yaml", "vasprun.xml"]
    assert si.has_nac is False and si.fc_method == "finite-difference" and si.n_displacements == 1
    assert si.displacement_A == pytest.approx(0.01)
    nacl, _ = imported["NaCl"]
    assert nacl.has_nac is True and "BORN" in nacl.engine.settings["files"]
    rd, _ = imported["NaCl-rd"]
    assert rd.fc_method == "symfc" and rd.engine.settings["dataset_type"] == "type-II" and rd.n_displacements == 10
    assert rd.displacement_A == pytest.approx(0.03, abs=1e-5)
    assert nacl.supercell_matrix == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_symfc_on_random_displacements_matches_phonopy_symfc(shared_data, tmp_path, imported):
    folder = shared_data.joinpath(*DFT, "NaCl-rd")
    doc = import_phonopy_doc(folder, fc_method="symfc")
    ref = reference_numbers(phonopy_load(folder, tmp_path, fc_calculator="symfc"))
    for key in ("300", "1000"):
        assert doc.thermal[key].A_vib_meV_per_atom == pytest.approx(ref["thermal"][key]["A_vib_meV_per_atom"], rel=RTOL)
        assert doc.thermal[key].S_J_per_K_mol == pytest.approx(ref["thermal"][key]["S_J_per_K_mol"], rel=RTOL)
    np.testing.assert_allclose(np.array(doc.band_structure.frequencies), ref["band_frequencies"], rtol=RTOL,
                               atol=ATOL_THZ)
    # the same crystal from systematic displacements (other DFT runs): same physics within DFT noise
    sys_doc, _ = imported["NaCl"]
    diff = np.abs(np.array(doc.band_structure.frequencies) - np.array(sys_doc.band_structure.frequencies))
    assert diff.max() < 0.15  # THz
    assert abs(doc.thermal["300"].A_vib_meV_per_atom - sys_doc.thermal["300"].A_vib_meV_per_atom) < 1.0


def test_finite_differences_refuse_random_displacements(shared_data):
    with pytest.raises(InputError, match="NaCl-rd.*symfc"):
        load_phonopy_folder(shared_data.joinpath(*DFT, "NaCl-rd"), fc_method="finite-difference")


def test_symfc_also_works_on_systematic_displacements(shared_data, imported):
    doc = import_phonopy_doc(shared_data.joinpath(*DFT, "NaCl"), fc_method="symfc")
    ref_doc, _ = imported["NaCl"]
    assert doc.fc_method == "symfc"
    assert doc.thermal["300"].A_vib_meV_per_atom == pytest.approx(ref_doc.thermal["300"].A_vib_meV_per_atom, abs=0.05)


def test_phonopy_yaml_export_round_trips(imported, tmp_path):
    import phonopy

    from phonon_flows.makers.phonons import write_phonopy_yaml

    doc, ref = imported["MgO"]
    path = write_phonopy_yaml(doc, tmp_path / "phonopy_params.yaml")
    ph = phonopy.load(path, log_level=0)  # dataset with forces + NAC inside
    assert ph.nac_params is not None
    assert phonopy.load(io.StringIO(doc.phonopy_yaml), log_level=0).dataset is not None
    again = reference_numbers(ph)
    for key in ("300", "1000"):
        assert again["thermal"][key]["A_vib_meV_per_atom"] == pytest.approx(
            ref["thermal"][key]["A_vib_meV_per_atom"], rel=RTOL
        )


def test_phonopy_params_yaml_folder(shared_data, tmp_path, imported):
    ph = phonopy_load(shared_data.joinpath(*DFT, "NaCl"), tmp_path)
    folder = tmp_path / "params"
    folder.mkdir()
    ph.save(folder / "phonopy_params.yaml")  # phonopy's own export: cell, dataset with forces, NAC
    doc = import_phonopy_doc(folder)
    ref_doc, _ = imported["NaCl"]
    assert doc.engine.settings["files"] == ["phonopy_params.yaml"] and doc.has_nac
    for key in ("300", "1000"):
        assert doc.thermal[key].A_vib_meV_per_atom == pytest.approx(ref_doc.thermal[key].A_vib_meV_per_atom, rel=RTOL)
        assert doc.thermal[key].Cv_J_per_K_mol == pytest.approx(ref_doc.thermal[key].Cv_J_per_K_mol, rel=RTOL)


def test_settings_change_the_numbers(shared_data, imported):
    folder = shared_data.joinpath(*DFT, "MgO")
    doc = import_phonopy_doc(folder, settings=phonon_settings(temperatures=[500], mesh_length=20, cutoff_frequency=0.5,
                                                              stability_tolerance=0.0))
    assert list(doc.thermal) == ["T500"]
    assert doc.mesh == [8, 8, 8]  # 20 Å x |b| = 20 x 0.407 / Å -> 8.1
    assert doc.cutoff_frequency_THz == 0.5
    base, _ = imported["MgO"]
    assert doc.settings_hash != base.settings_hash and doc.structure_hash == base.structure_hash


# --- bad folders: clear errors naming the folder -------------------------------------------
def _copy(shared_data, tmp_path, name):
    dst = tmp_path / f"{name}-copy"
    shutil.copytree(shared_data.joinpath(*DFT, name), dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    dst.chmod(0o755)
    return dst


def _truncate_type1_force_sets(path, keep: int):
    lines = path.read_text().splitlines()
    natom = int(lines[0].split()[0])
    block = 1 + 1 + 1 + natom  # blank, displaced atom, displacement vector, forces
    header = [lines[0], str(keep)]
    body = lines[2: 2 + keep * block]
    path.write_text("\n".join(header + body) + "\n")


def test_missing_forces_are_named(shared_data, tmp_path):
    folder = _copy(shared_data, tmp_path, "NaCl")
    _truncate_type1_force_sets(folder / "FORCE_SETS", keep=1)
    with pytest.raises(InputError) as err:
        load_phonopy_folder(folder)
    assert str(folder) in str(err.value)
    assert "missing" in str(err.value) and "2" in str(err.value)


def test_mismatched_displacements_are_named(shared_data, tmp_path):
    folder = _copy(shared_data, tmp_path, "MgO")
    lines = (folder / "FORCE_SETS").read_text().splitlines()
    # layout: natom, count, blank, displaced atom, displacement vector, forces...
    assert lines[4].split() == ["0.0100000000000000", "0.0000000000000000", "0.0000000000000000"]
    lines[4] = "  0.0000000000000000   0.0100000000000000   0.0000000000000000"
    (folder / "FORCE_SETS").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=f"{folder.name}.*do not match"):
        load_phonopy_folder(folder)


def test_folder_without_forces(shared_data, tmp_path):
    folder = _copy(shared_data, tmp_path, "MgO")
    (folder / "FORCE_SETS").unlink()
    with pytest.raises(InputError, match=f"{folder.name}.*no forces"):
        load_phonopy_folder(folder)


def test_vasprun_count_mismatch(shared_data, tmp_path):
    folder = _copy(shared_data, tmp_path, "Si")
    shutil.copy(folder / "vasprun.xml", folder / "vasprun.xml-002")
    with pytest.raises(InputError, match=f"{folder.name}.*2 vasprun.xml.*1 displacements"):
        load_phonopy_folder(folder)


def test_not_a_phonopy_folder(tmp_path):
    with pytest.raises(InputError, match="no phonopy_params.yaml"):
        load_phonopy_folder(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        load_phonopy_folder(tmp_path / "nope")


def test_force_constants_folder(shared_data, tmp_path, imported):
    from phonopy.file_IO import write_FORCE_CONSTANTS

    ph = phonopy_load(shared_data.joinpath(*DFT, "NaCl"), tmp_path, is_compact_fc=False)
    folder = _copy(shared_data, tmp_path, "NaCl")
    (folder / "FORCE_SETS").unlink()
    write_FORCE_CONSTANTS(ph.force_constants, filename=folder / "FORCE_CONSTANTS")
    doc = import_phonopy_doc(folder)
    ref_doc, _ = imported["NaCl"]
    assert doc.fc_method == "imported" and "FORCE_CONSTANTS" in doc.engine.settings["files"]
    assert doc.thermal["300"].A_vib_meV_per_atom == pytest.approx(ref_doc.thermal["300"].A_vib_meV_per_atom, rel=1e-6)
    assert "force_constants" in doc.phonopy_yaml  # no forces to rebuild them from: exported as such
