"""Harmonic DFT labels (PBEsol, phonondb): F = -Φu, E = ½uᵀΦu from an entry's DFT force constants,
the refusal of structures that are not displaced copies of its supercell, phonons through the
engine, and the recipe's stages on phonondb materials (a small real campaign)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.io.ase import AseAtomsAdaptor

from phonon_flows.core import phonondb as pdb
from phonon_flows.core.perturb import perturb_supercell
from phonon_flows.engines import get_engine
from phonon_flows.errors import InputError
from phonon_flows.makers.phonons import engine_phonons, phonon_settings, phonondb_phonon_doc

DATA = Path(__file__).resolve().parent / "data" / "phonondb"
WURTZITE = DATA / "materials-id-560588-zns-p6-3mc-186.tar.lzma"
ZINCBLENDE = DATA / "materials-id-10695-zns-f-43m-216.tar.lzma"
SI = DATA / "materials-id-149-si-fd-3m-227.tar.lzma"


@pytest.fixture(scope="module")
def wurtzite():
    if not WURTZITE.is_file():
        pytest.fail(f"phonondb test entry missing: {WURTZITE}")  # shipped in the repository
    imp, entry = pdb.load_phonondb_entry(WURTZITE, use_born=False)
    return imp.phonon, entry


def engine():
    return get_engine("harmonic-dft", entries={"ZnS-wz": str(WURTZITE), "ZnS-zb": str(ZINCBLENDE), "Si": str(SI)})


def test_labels_are_minus_phi_u_and_reproduce_the_dft_force_sets(wurtzite):
    ph, entry = wurtzite
    eng = engine()
    assert eng.info.kind == "dft" and eng.info.label == "harmonic DFT (PBEsol, phonondb)"
    assert "CC-BY-4.0" in eng.info.provenance
    fd = pdb.finite_displacement_supercells(ph, entry.force_sets)
    atoms = [AseAtomsAdaptor.get_atoms(s) for s, _, _ in fd]
    results = eng.compute(atoms, material_id="ZnS-wz")
    for res, (_, dft_forces, u) in zip(results, fd, strict=True):
        # the DFT forces of phonondb's own supercells, up to what -Φu leaves out: the residual forces
        # of the relaxed cell (~1e-3 eV/Å along c here) and the odd anharmonic terms that phonopy's
        # ± displacement pairs along c average away (a few % of the largest force)
        assert np.abs(dft_forces).max() > 0.05
        assert np.abs(res.forces - dft_forces).max() < 0.05 * np.abs(dft_forces).max()
        assert res.energy == pytest.approx(-0.5 * np.sum(u * res.forces), rel=1e-10)
        assert res.stress is None


def test_labels_of_a_perturbed_supercell_are_harmonic_and_in_any_atom_order(wurtzite):
    ph, _ = wurtzite
    sc = pdb.supercell_structure(ph)
    pert = perturb_supercell(sc, 1, 0.01, 0.05, seed=7).structures[0]
    eng = engine()
    (res,) = eng.compute([AseAtomsAdaptor.get_atoms(pert)], material_id="ZnS-wz")
    # E is the energy of F: a finite difference of E along a random direction equals -F·d
    d = np.random.default_rng(1).normal(size=(len(pert), 3)) * 1e-4
    moved = pert.copy()
    for i in range(len(moved)):
        moved.translate_sites([i], d[i], frac_coords=False, to_unit_cell=False)
    (res2,) = eng.compute([AseAtomsAdaptor.get_atoms(moved)], material_id="ZnS-wz")
    assert res2.energy - res.energy == pytest.approx(-np.sum(0.5 * (res.forces + res2.forces) * d), rel=1e-6)
    # the same structure with its atoms shuffled: the same forces per atom
    order = np.random.default_rng(2).permutation(len(pert))
    shuffled = pert.copy()
    shuffled = type(pert).from_sites([pert[i] for i in order])
    (res3,) = eng.compute([AseAtomsAdaptor.get_atoms(shuffled)], material_id="ZnS-wz")
    np.testing.assert_allclose(res3.forces, res.forces[order], atol=1e-12)
    assert res3.energy == pytest.approx(res.energy, rel=1e-12)


def test_refuses_what_is_not_a_displaced_copy_of_the_supercell(wurtzite):
    ph, _ = wurtzite
    eng = engine()
    sc = pdb.supercell_structure(ph)
    zb_imp, _ = pdb.load_phonondb_entry(ZINCBLENDE, use_born=False)
    zb = pdb.supercell_structure(zb_imp.phonon)
    with pytest.raises(InputError, match="ZnS-wz.*atoms.*not a displaced copy"):  # the zinc blende supercell
        eng.compute([AseAtomsAdaptor.get_atoms(zb)], material_id="ZnS-wz")
    with pytest.raises(InputError, match="ZnS-wz.*(atoms|lattice)"):  # the unit cell
        eng.compute([AseAtomsAdaptor.get_atoms(to_unit(ph))], material_id="ZnS-wz")
    strained = sc.copy()
    strained.apply_strain(0.02)
    with pytest.raises(InputError, match="ZnS-wz.*lattice is not the lattice of the phonondb supercell"):
        eng.compute([AseAtomsAdaptor.get_atoms(strained)], material_id="ZnS-wz")
    far = sc.copy()
    far.translate_sites([0], [0.0, 0.0, 0.9], frac_coords=False)
    with pytest.raises(InputError, match="ZnS-wz.*atom 0 \\(Zn\\).*not a small displacement"):
        eng.compute([AseAtomsAdaptor.get_atoms(far)], material_id="ZnS-wz")
    with pytest.raises(InputError, match="GaN.*no phonondb entry"):
        eng.compute([AseAtomsAdaptor.get_atoms(sc)], material_id="GaN")


def to_unit(ph):
    return pdb.to_structure(ph.unitcell)


def test_phonons_with_the_engine_equal_the_entry_phonons():
    settings = phonon_settings(temperatures=[300])
    imp, entry = pdb.load_phonondb_entry(SI, use_born=False)
    doc = engine_phonons.original(pdb.to_structure(entry.unitcell), "harmonic-dft", {"entries": {"Si": str(SI)}},
                                  settings, entry.supercell_matrix.tolist(), "Si", None, None, None, False, False)
    ref = phonondb_phonon_doc(SI, settings, use_born=False)
    assert not doc.failed, doc.errors
    assert doc.engine.name == "harmonic-dft" and doc.engine.kind == "dft"
    assert doc.enthalpy_per_atom_eV is None  # phonondb has no total energies
    assert doc.thermal["300"].A_vib_meV_per_atom == pytest.approx(ref.thermal["300"].A_vib_meV_per_atom, abs=1e-4)
    np.testing.assert_allclose(doc.band_structure.frequencies, ref.band_structure.frequencies, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("dft_training", ["both"])
def test_campaign_on_phonondb_materials(tmp_path, dft_training):
    """The recipe's stages on phonondb materials: perturb (DIM) -> harmonic DFT labels (and the FD
    supercells) -> training set -> MACE (2 epochs) -> phonons of the held-out wurtzite with MACE
    and harmonic DFT -> benchmark against DFT."""
    from phonon_flows.demo import phonondb_campaign_maker, phonondb_materials
    from phonon_flows.runner import run_campaign
    from phonon_flows.store import get_store

    materials, bad = phonondb_materials([ZINCBLENDE, WURTZITE, SI])
    assert bad == [] and sorted(materials) == ["Si-mp-149", "ZnS-mp-10695", "ZnS-mp-560588"]
    maker = phonondb_campaign_maker(materials, ["ZnS-mp-560588"], name=f"pdb-{dft_training}", epochs=2,
                                    dft_training=dft_training, n_perturbations=2,
                                    hyperparameters={"hidden_irreps": "4x0e + 4x1o", "valid_fraction": 0.2, "batch_size": 2})
    flow = maker.make({mid: m.structure for mid, m in materials.items()})
    store = get_store(store_dir=str(tmp_path / "store"))
    summary = run_campaign(flow, store, progress=False, work_dir=tmp_path / "runs")
    assert summary.ok, summary.render()
    store.connect()
    bench = store.query_one({"name": "benchmark"}, load=True)["output"]
    assert bench["reference_is_dft"] is True
    assert bench["reference_engine"]["name"] == "harmonic-dft"
    assert bench["material_ids"] == ["ZnS-mp-560588"]
    assert bench["frequency"]["mae"] > 0
    ts = store.query_one({"name": "training set"}, load=True)["output"]
    n_expected = 2 * 2 + (0 if dft_training == "perturbed" else 2 + 1)  # + FD: 2 for ZnS zb, 1 for Si
    assert ts["n_structures"] == n_expected, ts
    perturb = store.query_one({"name": "perturb ZnS-mp-10695"}, load=True)["output"]
    assert perturb["supercell_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]] and perturb["n_atoms_supercell"] == 64
