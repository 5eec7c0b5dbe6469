"""Residual forces (phonopy's ``--fz``): the undisplaced supercell's forces are subtracted where the
crystal's symmetry allows them, so a structure off the engine's minimum gets the engine's Hessian
(what central differences give) rather than one-sided differences polluted by F0/u."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from phonon_flows.core import phonons as P
from phonon_flows.errors import InputError
from phonon_flows.makers.batched_phonons import phonons_for_many
from phonon_flows.makers.phonons import engine_phonons, phonon_settings
from phonon_flows.engines import get_engine


def wurtzite_cuag(u: float = 0.40) -> Structure:
    """A wurtzite-type CuAg (EMT knows both): its free internal coordinate u is set away from EMT's
    minimum, so every atom carries a force along c."""
    lat = Lattice.hexagonal(2.9, 4.75)
    return Structure(lat, ["Cu", "Cu", "Ag", "Ag"],
                     [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]])


def test_symmetry_decides_where_residual_forces_can_exist():
    def allowed(structure, smat):
        return P.residual_forces_allowed(P.make_phonopy(structure, smat))

    for atoms in (bulk("Si", "diamond", a=5.43), bulk("NaCl", "rocksalt", a=5.64), bulk("Cu", "fcc", a=3.61)):
        assert not allowed(AseAtomsAdaptor.get_structure(atoms), np.eye(3) * 2)
    assert allowed(wurtzite_cuag(), np.diag([2, 2, 2]))  # 3m sites: a vector along c is invariant
    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                       [[0, 0, 0], [0.3048, 0.3048, 0]])
    assert allowed(rutile, np.diag([2, 2, 3]))  # O on mm2 (4f)
    with pytest.raises(InputError, match="residual_forces"):
        phonon_settings(residual_forces="drop")


def _fc(doc):
    return np.asarray(doc.force_constants.force_constants)


def _frequencies(structure, smat, fc):
    ph = P.make_phonopy(structure, smat)
    ph.force_constants = fc
    ph.run_mesh([6, 6, 4], is_gamma_center=True)
    return ph.mesh.frequencies


def cu3ag_p4mm(dz: float = 0.01) -> Structure:
    """fcc Cu3Ag with the Ag atom moved along c: P4mm, every atom free along c, stable under EMT,
    0.5 eV/Å on an atom in the undisplaced structure."""
    return Structure(Lattice.cubic(3.61), ["Cu", "Cu", "Cu", "Ag"],
                     [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5 + dz]])


def test_random_displacements_subtract_residual_forces_and_match_finite_differences():
    structure = cu3ag_p4mm()
    smat = np.diag([2, 2, 2])
    emt = get_engine("emt")
    f0 = emt.compute([P.to_ase_atoms(P.make_phonopy(structure, smat).supercell)])[0].forces
    assert np.abs(f0).max() > 0.3  # off EMT's minimum: forces along c
    # finite displacements: F0 cancels in phonopy's fit (the central-difference result exactly)
    fd = engine_phonons.original(structure, "emt", {}, phonon_settings(), smat, "CuAg")
    ph = P.make_phonopy(structure, smat)
    cells = P.generate_displacements(ph, is_plusminus=True)
    P.set_forces(ph, [r.forces for r in emt.compute(cells)])
    P.produce_force_constants(ph, None)
    np.testing.assert_allclose(_fc(fd), np.asarray(ph.force_constants), atol=1e-8)
    assert fd.residual_force_max_eV_A is None  # not computed: not needed
    # random displacements (symfc): without the subtraction F0/u enters the fit
    rd = {mode: engine_phonons.original(structure, "emt", {}, phonon_settings(random_displacements="auto",
                                                                                 residual_forces=mode), smat, "CuAg")
          for mode in ("subtract", "ignore")}
    assert rd["subtract"].fc_method == "symfc" and rd["subtract"].n_displacements > 1
    assert rd["subtract"].residual_force_max_eV_A == pytest.approx(np.linalg.norm(f0, axis=1).max())
    assert rd["ignore"].residual_force_max_eV_A is None
    ref = _frequencies(structure, smat, _fc(fd))
    err = {m: np.abs(_frequencies(structure, smat, _fc(d)) - ref).mean() for m, d in rd.items()}
    assert err["subtract"] < 0.03, err  # THz, mean over the mesh (measured 0.018)
    assert err["ignore"] > 0.2 and err["ignore"] > 8 * err["subtract"], err  # measured 0.35
    # the batched screening path does the same (same displacements: same seed)
    (batched,) = phonons_for_many([structure], emt, phonon_settings(random_displacements="auto"), [smat], ["CuAg"])
    np.testing.assert_allclose(_fc(batched), _fc(rd["subtract"]), atol=1e-10)
    assert batched.residual_force_max_eV_A == pytest.approx(rd["subtract"].residual_force_max_eV_A)


def test_auto_snapshots_are_a_multiple_of_symfcs_count():
    from phonopy.interface.symfc import SymfcFCSolver

    structure = wurtzite_cuag()
    ph = P.make_phonopy(structure, np.diag([2, 2, 2]))
    fewest = SymfcFCSolver(ph.supercell, symmetry=ph.symmetry).estimate_numbers_of_supercells(orders=[2])[2]
    assert len(P.generate_displacements(ph, number_of_snapshots="auto")) == 4 * fewest  # phonopy's factor
    assert len(P.generate_displacements(ph, number_of_snapshots="auto", snapshot_factor=3)) == 3 * fewest
    for bad in (0, -2, "many", 1.5, True):
        with pytest.raises(InputError, match="random_displacements"):
            phonon_settings(random_displacements=bad)
    with pytest.raises(InputError, match="snapshot_factor"):
        phonon_settings(random_displacements="auto", snapshot_factor=0.5)
    # keys that only act on random displacements stay out of finite-displacement settings (hashes)
    assert "residual_forces" not in phonon_settings() and "snapshot_factor" not in phonon_settings()


def test_no_extra_force_call_where_symmetry_forbids_residual_forces():
    """Random displacements of fcc Cu: no atom can carry a force, so none is computed."""
    calls = []
    emt = get_engine("emt")
    original = emt.compute

    def counting(atoms_list, material_id=None):
        calls.append(len(atoms_list))
        return original(atoms_list, material_id=material_id)

    emt.compute = counting
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.7))  # strained: a pressure, but no force
    (doc,) = phonons_for_many([cu], emt, phonon_settings(random_displacements=2), [np.eye(3) * 3], ["Cu"])
    assert calls == [2] and doc.n_displacements == 2 and doc.residual_force_max_eV_A is None
