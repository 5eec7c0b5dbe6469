"""Benchmarks compare like with like: the same NAC treatment and supercell matrix on both sides,
ΔH only from the reference, thermal properties in both moles (real NaCl DFT data, phonopy's example)."""

from __future__ import annotations

import numpy as np
import pytest

from phonon_flows.core.phonopy_io import load_phonopy_folder
from phonon_flows.core import phonons as ph_core
from phonon_flows.makers.benchmark import BenchmarkMaker
from phonon_flows.makers.phonons import import_phonopy_doc, phonon_doc_from_phonopy, phonon_settings
from phonon_flows.errors import InputError
from phonon_flows.schemas.common import EngineInfo
from phonon_flows.schemas.phonon import PhononDoc

DFT = ("dft-phonons",)
MLIP = EngineInfo(name="mace", kind="mlip", model_sha256="0" * 64)
SETTINGS = {**phonon_settings(), "band_npoints": 21}


@pytest.fixture(scope="module")
def nacl(shared_data):
    """The reference imported as phonopy does (NAC from BORN) and the same force constants
    without NAC labelled as an MLIP: any difference is NAC alone."""
    folder = shared_data.joinpath(*DFT, "NaCl")
    ref = import_phonopy_doc(folder, settings=SETTINGS, material_id="NaCl", enthalpy_per_atom=-3.4)
    imp = load_phonopy_folder(folder, use_born=False)
    mlip = phonon_doc_from_phonopy(imp.phonon, ph_core.to_structure(imp.phonon.unitcell), MLIP, SETTINGS,
                                   material_id="NaCl", fc_method=imp.fc_method, enthalpy_per_atom=-9.9)
    return ref, mlip


def test_import_keeps_phonopys_nac_and_records_it(nacl, shared_data):
    ref, mlip = nacl
    assert ref.has_nac and ref.nac.applied and ref.nac.source == "BORN file"
    assert np.asarray(ref.nac.born).shape == (2, 3, 3) and np.asarray(ref.nac.dielectric).shape == (3, 3)
    assert ref.nac.born[0][0][0] == pytest.approx(1.08703, abs=1e-5)  # Na: Zxx in NaCl/BORN
    assert not mlip.has_nac and mlip.nac.applied is False
    back = PhononDoc.model_validate(ref.model_dump())
    assert back.nac == ref.nac


def test_thermal_in_both_moles(nacl):
    ref, _ = nacl
    t = ref.thermal["T300"]
    assert ref.thermal[300] is t and ref.thermal["300"] is t  # old-style lookups still work
    assert t.Cv_J_per_K_mol_cell == pytest.approx(t.Cv_J_per_K_mol * ref.natom_primitive, rel=1e-12)
    assert t.S_J_per_K_mol_cell == pytest.approx(t.S_J_per_K_mol * ref.natom_primitive, rel=1e-12)
    # 1000 K, high-temperature limit: 3R per mole of atoms, 3R x 2 per mole of NaCl primitive cells
    assert ref.thermal["T1000"].Cv_J_per_K_mol_cell == pytest.approx(2 * 3 * 8.314462618, rel=0.01)
    assert set(ref.model_dump()["thermal"]) == {"T300", "T1000"}  # stored keys: plain MongoDB paths


def test_default_benchmark_compares_both_without_nac(nacl):
    ref, mlip = nacl
    # what the documents hold as they are: NAC alone moves the bands by ~0.1 THz
    fr, fm = (np.asarray(d.band_structure.frequencies) for d in (ref, mlip))
    assert np.abs(fr - fm).mean() > 0.05
    doc = BenchmarkMaker(write_figures=False).benchmark([mlip], [ref])
    assert doc.nac == "none" and doc.n_materials == 1 and doc.skipped == []
    row = doc.materials[0]
    assert row.recomputed == ["reference"] and row.nac_applied is False
    assert doc.frequency.mae < 1e-6 and doc.thermal[300].A_vib.mae < 1e-6


def test_nac_reference_applies_the_reference_charges_to_both(nacl):
    ref, mlip = nacl
    doc = BenchmarkMaker(write_figures=False, nac="reference").benchmark([mlip], [ref])
    row = doc.materials[0]
    assert doc.nac == "reference" and row.recomputed == ["mlip"] and row.nac_applied is True
    assert doc.frequency.mae < 1e-6 and doc.thermal[1000].S_vib_cell.mae < 1e-6
    with pytest.raises(InputError, match="nac"):
        BenchmarkMaker(nac="both")


def test_pairs_that_cannot_be_made_alike_are_skipped_with_the_reason(nacl):
    ref, mlip = nacl
    no_data = ref.model_copy(update={"phonopy_yaml": None})
    doc_input = [mlip, mlip.model_copy(update={"material_id": "NaCl-2"})]
    refs = [no_data, ref.model_copy(update={"material_id": "NaCl-2", "supercell_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]})]
    with pytest.raises(InputError, match="no material could be benchmarked"):
        BenchmarkMaker(write_figures=False).benchmark(doc_input, refs)
    ok = ref.model_copy(update={"material_id": "NaCl-3"})
    doc = BenchmarkMaker(write_figures=False).benchmark(
        [*doc_input, mlip.model_copy(update={"material_id": "NaCl-3"})], [*refs, ok])
    reasons = {e.material_id: e.reason for e in doc.skipped}
    assert "no phonopy data" in reasons["NaCl"] and "NAC" in reasons["NaCl"]
    assert "supercell matrices differ" in reasons["NaCl-2"]
    assert doc.material_ids == ["NaCl-3"]


def test_enthalpy_only_from_the_reference(nacl):
    """ΔH never falls back to the MLIP's energies (a forces-only model's energies mean nothing)."""
    ref, mlip = nacl
    r1 = ref.model_copy(update={"material_id": "a", "enthalpy_per_atom_eV": None})
    r2 = ref.model_copy(update={"material_id": "b", "enthalpy_per_atom_eV": None})
    m1, m2 = (mlip.model_copy(update={"material_id": k, "nac": ref.nac, "has_nac": True}) for k in "ab")
    doc = BenchmarkMaker(write_figures=False).benchmark([m1, m2], [r1, r2])
    assert all(m.enthalpy_per_atom_eV is None for m in doc.materials)
    assert all(not res.rows for res in doc.polymorphs.values())
    assert doc.polymorph_notes and "no reference enthalpy: a, b" in doc.polymorph_notes[0]
    # with reference enthalpies the analysis runs
    r2h = r2.model_copy(update={"enthalpy_per_atom_eV": -3.3})
    r1h = r1.model_copy(update={"enthalpy_per_atom_eV": -3.4})
    doc = BenchmarkMaker(write_figures=False).benchmark([m1, m2], [r1h, r2h])
    assert doc.polymorphs[300].rows[0].dH_meV == pytest.approx(100.0)


def test_paper_table_numbers_come_from_the_documents(nacl):
    """Every number of the paper table is computed from the same documents: per-cell C_v/S,
    A_vib R², ΔA_vib MAE/R² of polymorphs, the training-set force MAE from the TrainingDoc."""
    from phonon_flows.report.figures import paper_metrics_dict

    ref, mlip = nacl
    refs = [ref.model_copy(update={"material_id": k, "enthalpy_per_atom_eV": h}) for k, h in (("a", -3.4), ("b", -3.39))]
    scaled = []
    for k, f in (("a", 1.0), ("b", 1.02)):  # b's MLIP phonons: thermal numbers off by 2 %
        th = {t: v.model_copy(update={"S_J_per_K_mol_cell": v.S_J_per_K_mol_cell * f, "Cv_J_per_K_mol_cell":
                                      v.Cv_J_per_K_mol_cell * f, "A_vib_meV_per_atom": v.A_vib_meV_per_atom * f})
              for t, v in mlip.thermal.items()}
        scaled.append(mlip.model_copy(update={"material_id": k, "thermal": th}))
    training = {"train_force_mae": 17.5, "valid_force_mae": 21.0, "n_train": 10, "n_valid": 2}
    doc = BenchmarkMaker(write_figures=False).benchmark(scaled, refs, training_doc=training)
    rows = paper_metrics_dict(doc)
    s_b = mlip.thermal[300].S_J_per_K_mol_cell  # both sides without NAC: the reference is recomputed so
    assert rows["S_vib MAE 300 K"]["this_run"] == pytest.approx(0.02 * s_b / 2, rel=1e-3)  # mean over a (0) and b
    assert rows["force MAE (training set)"] == {"unit": "meV/Å", "this_run": 17.5, "paper": 18.8}
    assert rows["force MAE (validation)"]["this_run"] == 21.0
    assert rows["ΔA_vib MAE 300 K"]["this_run"] == pytest.approx(abs(0.02 * mlip.thermal[300].A_vib_meV_per_atom))
    assert rows["polymorph transitions, reference 300 K"]["this_run"] == doc.polymorphs[300].n_reference
