"""phonon_flows.core.phonons: mesh rule, band path, force constants, thermal units, stability."""

from __future__ import annotations

import numpy as np
import pytest
from _phonopy_reference import DFT, phonopy_load
from ase.build import bulk
from ase.calculators.emt import EMT
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from phonon_flows.core import phonons as P
from phonon_flows.errors import CalculationError, InputError

FCC_PRIM_TO_CUBIC = [[-1, 1, 1], [1, -1, 1], [1, 1, -1]]  # conventional cubic cell of an fcc primitive cell


# --- mesh ------------------------------------------------------------------------------------
def test_mesh_from_length_is_the_papers_formula():
    # hexagonal a = 3 Å, c = 5 Å: |b1| = |b2| = 2 / (sqrt(3) a) = 0.3849 /Å, |b3| = 1 / c = 0.2 /Å
    hexagonal = Lattice.hexagonal(3.0, 5.0).matrix
    assert P.mesh_from_length(hexagonal, 75) == [29, 29, 15]  # 28.87 -> 29, 15.0 -> 15
    # fcc primitive of a = 5.69 Å (NaCl): |b_i| = sqrt(3) / a = 0.3044 /Å -> 22.83 -> 23
    a = 5.690301476175671
    fcc = np.array([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    assert P.mesh_from_length(fcc, 75) == [23, 23, 23]
    # nint rounds halves up (l |b| = 2.5 -> 3; numpy.rint would give 2), and N_i >= 1
    assert P.mesh_from_length(np.eye(3) * 2.0, 5.0) == [3, 3, 3]
    assert P.mesh_from_length(np.eye(3) * 100.0, 75) == [1, 1, 1]
    with pytest.raises(InputError):
        P.mesh_from_length(fcc, 0)


def test_phonopy_length_mode_agrees_on_cubic_cells(shared_data, tmp_path):
    from phonopy.phonon.grid import length2mesh

    ph = phonopy_load(shared_data.joinpath(*DFT, "NaCl"), tmp_path)
    ours = P.mesh_from_length(ph.primitive.cell, 75)
    assert ours == length2mesh(75, ph.primitive.cell).tolist()
    ph.run_mesh(75.0)  # phonopy's own length mode (Γ-centred, symmetrized)
    assert ph.mesh.mesh_numbers.tolist() == ours


# --- band path --------------------------------------------------------------------------------
def _emt_forces(phonon):
    out = []
    for cell in phonon.supercells_with_displacements:
        atoms = P.to_ase_atoms(cell)
        atoms.calc = EMT()
        out.append(atoms.get_forces())
    return out


def _emt_phonon(structure, smat):
    phonon = P.make_phonopy(structure, smat)
    P.generate_displacements(phonon, 0.01)
    P.set_forces(phonon, _emt_forces(phonon))
    P.produce_force_constants(phonon)
    return phonon


def _oF_copper(a, b, c):
    """Face-centred orthorhombic Cu (strained fcc), conventional 4-atom cell with axes a, b, c."""
    from ase import Atoms

    return Atoms("Cu4", cell=np.diag([a, b, c]), pbc=True,
                 scaled_positions=[[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def test_band_path_is_right_for_a_non_standard_primitive_cell():
    """The path is seekpath's, expressed in the basis of the primitive cell actually used: an
    orthorhombic cell with its axes in the non-standard order (c < b < a) and a primitive matrix
    fixed by hand (as a phonopy file may fix it) gives the same labelled dispersion as the standard
    setting. phonopy's ``auto_band_structure`` assumes the standard setting and does not."""
    fcc = [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    std = _emt_phonon(_oF_copper(3.5, 3.6, 3.75), [2, 2, 2])
    rev = P.make_phonopy(_oF_copper(3.75, 3.6, 3.5), [2, 2, 2], primitive_matrix=fcc)
    P.generate_displacements(rev, 0.01)
    P.set_forces(rev, _emt_forces(rev))
    P.produce_force_constants(rev)
    a = P.analyze_phonons(std, with_dos=False)
    b = P.analyze_phonons(rev, with_dos=False)
    assert a.band_structure["segment_labels"] == b.band_structure["segment_labels"]
    assert a.band_structure["segment_labels"][0] == ["Γ", "Y"]
    np.testing.assert_allclose(b.band_structure["distances"], a.band_structure["distances"], atol=1e-8)
    np.testing.assert_allclose(b.band_structure["frequencies"], a.band_structure["frequencies"], atol=1e-5)
    assert b.thermal[0]["A_vib_meV_per_atom"] == pytest.approx(a.thermal[0]["A_vib_meV_per_atom"], rel=1e-6)
    # phonopy's own automatic path on the non-standard cell is another path
    std.auto_band_structure()
    rev.auto_band_structure()
    x, y = (np.concatenate(p.band_structure.frequencies) for p in (std, rev))
    assert x.shape != y.shape or np.abs(x - y).max() > 0.1


def test_a_band_path_seekpath_refuses_is_an_error_not_a_crash(monkeypatch):
    import seekpath

    def refuse(*args, **kwargs):
        raise seekpath.SymmetryDetectionError("Spglib could not detect the symmetry of the system")

    monkeypatch.setattr(seekpath, "get_path_orig_cell", refuse)
    phonon = _emt_phonon(bulk("Cu", "fcc", a=3.61), np.array(FCC_PRIM_TO_CUBIC) * 2)
    res = P.analyze_phonons(phonon)
    assert res.band_structure is None and res.min_frequency_band_THz is None
    assert len(res.errors) == 1 and "seekpath" in res.errors[0] and "SymmetryDetectionError" in res.errors[0]
    assert res.min_frequency_THz == res.min_frequency_mesh_THz and res.dynamically_stable
    assert res.thermal[0]["Cv_J_per_K_mol"] > 0


# --- thermal units ---------------------------------------------------------------------------
def test_thermal_properties_are_per_atom(shared_data, tmp_path):
    """The same crystal described with a 2-atom and an 8-atom 'primitive' cell gives the same
    per-atom numbers (on meshes sampling the same q-points)."""
    ph2 = phonopy_load(shared_data.joinpath(*DFT, "MgO"), tmp_path, is_nac=False)
    ph8 = phonopy_load(shared_data.joinpath(*DFT, "MgO"), tmp_path, is_nac=False, primitive_matrix="P")
    ph8.nac_params = None
    ph2.nac_params = None
    assert len(ph2.primitive) == 2 and len(ph8.primitive) == 8
    # the 8x8x8 mesh of the conventional cell = the 8x8x8 mesh of the cubic supercell lattice of
    # the fcc primitive cell; for the primitive cell use the equivalent 16x16x16 Γ-centred mesh
    # restricted to those points -> compare with a generous grid where both converge instead
    ph2.run_mesh([24, 24, 24], is_gamma_center=True)
    rows2, zpe2 = P.thermal_properties(ph2, [300.0], 0.1)
    ph8.run_mesh([12, 12, 12], is_gamma_center=True)
    rows8, zpe8 = P.thermal_properties(ph8, [300.0], 0.1)
    assert rows8[0]["Cv_J_per_K_mol"] == pytest.approx(rows2[0]["Cv_J_per_K_mol"], rel=1e-3)
    assert rows8[0]["S_J_per_K_mol"] == pytest.approx(rows2[0]["S_J_per_K_mol"], rel=1e-3)
    assert rows8[0]["A_vib_meV_per_atom"] == pytest.approx(rows2[0]["A_vib_meV_per_atom"], rel=1e-3)
    # Dulong-Petit: C_v -> 3R per mole of atoms at high temperature
    ph2.run_mesh([12, 12, 12], is_gamma_center=True)
    hot, _ = P.thermal_properties(ph2, [3000.0], 0.1)
    assert hot[0]["Cv_J_per_K_mol"] == pytest.approx(3 * 8.314462618, rel=5e-3)


# --- forces, datasets, force constants ------------------------------------------------------
def test_set_forces_rejects_missing_nan_and_wrong_shapes():
    phonon = P.make_phonopy(bulk("Cu", "fcc", a=3.61), np.eye(3, dtype=int) * 3)
    P.generate_displacements(phonon, 0.01)
    n = len(phonon.supercell)
    good = [np.zeros((n, 3))]
    assert len(phonon.supercells_with_displacements) == 1
    with pytest.raises(InputError, match="Cu1.*expected 1"):
        P.set_forces(phonon, good * 2, material_id="Cu1")
    with pytest.raises(InputError, match="missing"):
        P.set_forces(phonon, [None])
    with pytest.raises(InputError, match="shape"):
        P.set_forces(phonon, [np.zeros((n - 1, 3))])
    bad = np.zeros((n, 3))
    bad[3, 1] = np.nan
    with pytest.raises(CalculationError, match="NaN"):
        P.set_forces(phonon, [bad])
    with pytest.raises(InputError, match="no displacement dataset|forces are missing"):
        P.produce_force_constants(P.make_phonopy(bulk("Cu", "fcc", a=3.61), [2, 2, 2]))


def test_make_phonopy_rejects_bad_supercell_matrices():
    with pytest.raises(InputError, match="supercell matrix"):
        P.make_phonopy(bulk("Cu", "fcc", a=3.61), [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    with pytest.raises(InputError, match="supercell matrix"):
        P.make_phonopy(bulk("Cu", "fcc", a=3.61), [1.5, 1, 1])


def test_random_displacements_in_any_atom_order_give_symfc_force_constants():
    """Perturbed supercells built by pymatgen (its own atom order), every atom displaced, give the
    same force constants as phonopy's random-displacement dataset of the same configurations."""
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.61))
    smat = np.array(FCC_PRIM_TO_CUBIC) * 2  # 32 atoms
    ref = P.make_phonopy(cu, smat)
    P.generate_displacements(ref, 0.02, number_of_snapshots=3, random_seed=7)
    forces = _emt_forces(ref)
    P.set_forces(ref, forces)
    assert P.produce_force_constants(ref) == "symfc"

    # the same displaced supercells, atoms shuffled, as pymatgen Structures
    rng = np.random.default_rng(0)
    shuffled, shuffled_forces = [], []
    for cell, f in zip(ref.supercells_with_displacements, forces):
        perm = rng.permutation(len(cell))
        s = P.to_structure(cell)
        shuffled.append(Structure(s.lattice, [s[i].specie for i in perm], s.frac_coords[perm] % 1.0))
        shuffled_forces.append(f[perm])
    other = P.make_phonopy(cu, smat)
    P.set_random_displacement_dataset(other, shuffled, shuffled_forces)
    assert P.dataset_type(other.dataset) == "type-II"
    assert P.produce_force_constants(other, "symfc") == "symfc"
    np.testing.assert_allclose(other.force_constants, ref.force_constants, atol=1e-8)
    with pytest.raises(InputError, match="finite differences"):
        P.produce_force_constants(other, "finite-difference")


def test_random_displacement_dataset_rejects_foreign_supercells():
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.61))
    phonon = P.make_phonopy(cu, np.eye(3, dtype=int) * 2)
    wrong = cu.make_supercell([3, 3, 3], in_place=False)
    with pytest.raises(InputError, match="atoms"):
        P.set_random_displacement_dataset(phonon, [wrong], [np.zeros((len(wrong), 3))])
    with pytest.raises(InputError, match="2 displaced supercells but 1"):
        P.set_random_displacement_dataset(phonon, [cu, cu], [np.zeros((1, 3))])


# --- stability ---------------------------------------------------------------------------------
def test_stability_flag_on_force_constants_made_unstable(shared_data, tmp_path):
    """Flipping the sign of NaCl's DFT force constants turns every mode imaginary: the flag and the
    most negative mode must say so, at the q-point and band where phonopy finds that frequency."""
    ph = phonopy_load(shared_data.joinpath(*DFT, "NaCl"), tmp_path, is_nac=False)
    ph.nac_params = None
    stable = P.analyze_phonons(ph, with_dos=False)
    assert stable.dynamically_stable
    ph.force_constants = -ph.force_constants
    res = P.analyze_phonons(ph, with_dos=False)
    assert not res.dynamically_stable
    assert res.min_frequency_THz < -0.5
    mode = res.most_negative_mode
    assert mode["frequency_THz"] == res.min_frequency_THz
    freqs = ph.run_qpoints([mode["qpoint"]]).frequencies[0]
    assert freqs[mode["band_index"]] == pytest.approx(mode["frequency_THz"], rel=1e-8)
    # the top optical mode of the stable crystal becomes the most negative one
    assert mode["frequency_THz"] == pytest.approx(
        -max(np.max(stable.band_structure["frequencies"]), 0), rel=0.05
    )
    # a looser tolerance flips the verdict: the tolerance is applied, not hard-coded
    loose = P.analyze_phonons(ph, stability_tolerance=res.min_frequency_THz - 0.1, with_dos=False,
                              with_band_structure=False)
    assert loose.dynamically_stable and loose.stability_tolerance_THz == pytest.approx(res.min_frequency_THz - 0.1)


def test_band_structure_in_one_batch_equals_phonopy_s_bit_for_bit():
    """The band structure's dynamical matrices built in one call give phonopy's own band
    structure (frequencies and distances) bit for bit on real DFT force constants; with Born
    charges (NAC) phonopy's band structure itself is used."""
    from pathlib import Path

    from phonon_flows.core import phonondb as pdb

    data = Path(__file__).resolve().parent / "data" / "phonondb"
    imp, _ = pdb.load_phonondb_entry(data / "materials-id-560588-zns-p6-3mc-186.tar.lzma", use_born=False)
    ph = imp.phonon
    path = P.seekpath_band_path(ph.primitive)
    freqs, dists = P._band_frequencies(ph, path.segments)
    ph.run_band_structure(path.segments, path_connections=path.path_connections, labels=path.labels)
    assert np.array_equal(freqs, np.concatenate(ph.band_structure.frequencies))
    assert np.array_equal(dists, np.concatenate(ph.band_structure.distances))
    assert freqs.shape == (sum(len(s) for s in path.segments), 3 * len(ph.primitive)) and freqs.max() > 5.0
    band, worst = P._band_structure(ph, path)
    assert np.array_equal(band["frequencies"], np.concatenate(ph.band_structure.frequencies).tolist())
    assert worst["frequency_THz"] == freqs.min()

    nac, _ = pdb.load_phonondb_entry(data / "materials-id-1000-bate-fm-3m-225.tar.lzma", use_born=True)
    assert nac.phonon.nac_params is not None
    assert P._band_frequencies(nac.phonon, P.seekpath_band_path(nac.phonon.primitive).segments) is None


def test_frequencies_at_common_q_points_are_the_same_crystal_in_two_cell_settings():
    """Cu (ASE's EMT) in the conventional cubic cell with a 2x2x2 supercell, and in the primitive
    fcc cell with the same supercell lattice written on it: phonopy's own frequencies at the same
    Cartesian q-points agree, and a wrong conversion (reduced coordinates passed as they are) would
    not."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from pymatgen.io.ase import AseAtomsAdaptor

    from phonopy import Phonopy

    from _phonopy_reference import phonopy_with_calculator
    from phonon_flows.core.phonons import common_qpoint_frequencies, frequencies_at_cartesian_q

    conv = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.61, cubic=True))
    fcc = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.61))
    # another primitive basis of the same lattice (a unimodular change of basis)
    prim = Structure(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]) @ fcc.lattice.matrix, ["Cu"], [[0, 0, 0]])
    # phonopy's convention: the supercell's lattice (rows) is smat.T @ lattice
    smat = np.rint(2 * conv.lattice.matrix @ np.linalg.inv(prim.lattice.matrix)).astype(int).T
    assert not np.array_equal(smat, smat.T)  # a wrong convention would build another supercell
    a = phonopy_with_calculator(conv, np.eye(3, dtype=int) * 2, EMT())
    b = phonopy_with_calculator(prim, smat, EMT(), primitive_matrix="P")  # that basis as the primitive cell
    for ph in (a, b):
        ph.produce_force_constants()
    assert len(a.primitive) == len(b.primitive) == 1 and not np.allclose(a.primitive.cell, b.primitive.cell)
    fa, fb = common_qpoint_frequencies(a, b)
    assert fa.shape == fb.shape and fa.shape[1] == 3 and fa.max() > 5.0
    np.testing.assert_allclose(fa, fb, atol=1e-5)  # THz; the acoustic modes at Γ are zero to ~1e-6
    # X = (0, 1/a, 0) in Cartesian 1/Å: the transverse and longitudinal zone-boundary modes
    x = frequencies_at_cartesian_q(b, [[0.0, 1 / 3.61, 0.0]])
    b.run_qpoints([[0.0, 1 / 3.61, 0.0]])
    assert not np.allclose(x, b.get_qpoints_dict()["frequencies"], atol=1e-3)  # the conversion matters
    whole_cube = Phonopy(a.unitcell, supercell_matrix=np.eye(3, dtype=int) * 2, primitive_matrix="P")
    with pytest.raises(ValueError, match="atoms"):
        common_qpoint_frequencies(a, whole_cube)
