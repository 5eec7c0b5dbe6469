"""Supercell choice (phonon_flows.core.supercells): sizes in the window, 4x4x4 for one-atom
primitive cells, symmetry kept, phonopy's matrix convention."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from phonon_flows.core.supercells import (
    choose_supercell_matrix,
    compactness,
    make_supercell,
    preserves_symmetry,
    supercell_sizes_in_window,
)
from phonon_flows.errors import InputError


def fcc_primitive(a: float, species=("Cu",), coords=((0, 0, 0),)) -> Structure:
    h = a / 2
    return Structure(Lattice([[0, h, h], [h, 0, h], [h, h, 0]]), list(species), list(coords))


def nacl() -> Structure:
    return fcc_primitive(5.69, ("Na", "Cl"), ((0, 0, 0), (0.5, 0.5, 0.5)))


def hcp_mg() -> Structure:
    return Structure(Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])


def corundum() -> Structure:
    """Al2O3, R-3c, 10-atom rhombohedral primitive cell."""
    conv = Structure.from_spacegroup("R-3c", Lattice.hexagonal(4.759, 12.99), ["Al", "O"], [[0, 0, 0.3523], [0.3064, 0, 0.25]])
    prim = conv.get_primitive_structure()
    assert len(prim) == 10
    return prim


def phonopy_supercell_cell(structure: Structure, matrix: np.ndarray) -> np.ndarray:
    atoms = PhonopyAtoms(
        symbols=[str(s.specie) for s in structure], cell=structure.lattice.matrix, scaled_positions=structure.frac_coords
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ph = Phonopy(atoms, supercell_matrix=matrix, primitive_matrix="auto")
    point_group_msgs = [str(w.message) for w in caught if "Point group symmetries" in str(w.message)]
    assert not point_group_msgs, point_group_msgs
    return ph.supercell.cell


def point_group_order(structure: Structure) -> int:
    return len(SpacegroupAnalyzer(structure, symprec=1e-3).get_point_group_operations())


# --- the recipe's three cases -----------------------------------------------------------------
def test_one_atom_primitive_cell_gets_4x4x4():
    cu = fcc_primitive(3.61)
    m = choose_supercell_matrix(cu)
    assert m.tolist() == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]
    assert m.dtype.kind == "i"
    assert len(make_supercell(cu, m)) == 64  # outside the 100-200 window: the recipe's exception


def test_one_atom_primitive_given_as_conventional_cell():
    conv = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])
    m = choose_supercell_matrix(conv)
    sc = make_supercell(conv, m)
    assert len(sc) == 64
    # same lattice as 4x4x4 primitive cells
    prim_sc = make_supercell(fcc_primitive(3.61), np.diag([4, 4, 4]))
    assert sc.volume == pytest.approx(prim_sc.volume)
    assert sorted(sc.lattice.abc) == pytest.approx(sorted(prim_sc.lattice.abc))


def test_two_atom_cell_nacl():
    s = nacl()
    m = choose_supercell_matrix(s)
    sc = make_supercell(s, m)
    assert 100 <= len(sc) <= 200
    # the smallest symmetric compact choice for an fcc lattice in the window is 4x4x4 primitive cells
    assert len(sc) == 128 and m.tolist() == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]
    assert point_group_order(sc) == point_group_order(s) == 48


def test_two_atom_hexagonal_cell_keeps_its_symmetry():
    s = hcp_mg()
    m = choose_supercell_matrix(s)
    sc = make_supercell(s, m)
    assert 100 <= len(sc) <= 200
    assert point_group_order(sc) == point_group_order(s) == 24
    assert compactness(sc.lattice.matrix) >= 0.9
    assert np.allclose(phonopy_supercell_cell(s, m), sc.lattice.matrix)


def test_ten_atom_cell_corundum():
    s = corundum()
    m = choose_supercell_matrix(s)
    sc = make_supercell(s, m)
    assert 100 <= len(sc) <= 200
    assert len(sc) % 10 == 0
    assert compactness(sc.lattice.matrix) >= 0.9
    assert point_group_order(sc) == point_group_order(s) == 12
    assert np.allclose(phonopy_supercell_cell(s, m), sc.lattice.matrix)


@pytest.mark.parametrize("window", [(100, 200), (60, 90), (150, 160)])
def test_sizes_follow_the_window(window):
    lo, hi = window
    for s in (nacl(), hcp_mg(), corundum()):
        m = choose_supercell_matrix(s, lo, hi)
        n = len(make_supercell(s, m))
        assert lo <= n <= hi, (s.composition, window, n)


def test_matrix_uses_phonopys_convention():
    # a non-diagonal, non-symmetric matrix: phonopy and make_supercell must agree
    s = hcp_mg()
    m = np.array([[2, 1, 0], [0, 3, 0], [1, 0, 2]])
    sc = make_supercell(s, m)
    assert len(sc) == 2 * round(abs(np.linalg.det(m)))
    atoms = PhonopyAtoms(symbols=["Mg", "Mg"], cell=s.lattice.matrix, scaled_positions=s.frac_coords)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph = Phonopy(atoms, supercell_matrix=m, primitive_matrix=np.eye(3))
    assert np.allclose(ph.supercell.cell, sc.lattice.matrix)


# --- errors -------------------------------------------------------------------------------------
def test_no_supercell_in_window_names_the_material():
    with pytest.raises(InputError, match="no supercell of this 2-atom cell has between 101 and 101 atoms") as err:
        choose_supercell_matrix(nacl(), 101, 101, material_id="NaCl-x")
    assert str(err.value).startswith("NaCl-x")
    assert supercell_sizes_in_window(2, 101, 101) == []
    assert supercell_sizes_in_window(250, 100, 200) == []


def test_invalid_window():
    with pytest.raises(InputError, match="invalid supercell window"):
        choose_supercell_matrix(nacl(), 200, 100, material_id="NaCl-x")


# --- measures -----------------------------------------------------------------------------------
def test_compactness_of_known_lattices():
    a = 4.0
    assert compactness(np.eye(3) * a) == pytest.approx(1.0)
    # fcc: nearest image a/sqrt2, volume a^3/4 -> 2^(1/6); bcc: a*sqrt3/2, a^3/2 -> sqrt3/2 * 2^(1/3)
    fcc = 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    bcc = 0.5 * a * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]])
    assert compactness(fcc) == pytest.approx(2 ** (1 / 6))
    assert compactness(bcc) == pytest.approx(np.sqrt(3) / 2 * 2 ** (1 / 3))
    assert compactness(np.diag([a, a, 4 * a])) == pytest.approx(4 ** (-1 / 3))
    # independent of the basis chosen for the same lattice
    assert compactness(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]) @ np.diag([a, a, 2 * a])) == pytest.approx(
        compactness(np.diag([a, a, 2 * a]))
    )


def test_preserves_symmetry_detects_broken_point_group():
    s = nacl()
    rotations = SpacegroupAnalyzer(s).get_symmetry_dataset().rotations
    assert preserves_symmetry(np.diag([4, 4, 4]), rotations)
    assert not preserves_symmetry(np.diag([4, 4, 5]), rotations)


def test_cell_of_more_than_max_atoms_is_used_as_it_is():
    """The paper computes a unit cell of more than 200 atoms as it is (1x1x1), not refused."""
    big = nacl().make_supercell([5, 5, 5], in_place=False)  # 250 atoms
    assert len(big) == 250
    m = choose_supercell_matrix(big, material_id="NaCl-250")  # the recipe's 100-200 window
    assert np.array_equal(m, np.eye(3, dtype=int))
    assert len(make_supercell(big, m)) == len(big)
