"""Reading, validating and naming input structures (phonon_flows.core.structures)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Molecule, Structure

from phonon_flows.core.structures import (
    check_elements,
    closest_pair,
    material_id_for,
    read_structure,
    structure_hash,
    validate_structure,
)
from phonon_flows.errors import InputError, UnsupportedElementsError


def nacl_primitive(a: float = 5.69) -> Structure:
    h = a / 2
    return Structure(Lattice([[0, h, h], [h, 0, h], [h, h, 0]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def nacl_conventional(a: float = 5.69) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


# --- reading ------------------------------------------------------------------------------------
def test_read_cif_and_poscar_round_trip(tmp_path):
    s = nacl_conventional()
    s.to(filename=str(tmp_path / "NaCl.cif"))
    s.to(filename=str(tmp_path / "POSCAR"), fmt="poscar")
    for name in ("NaCl.cif", "POSCAR"):
        back = read_structure(tmp_path / name)
        assert back.composition.reduced_formula == "NaCl"
        assert len(back) == 8
        assert back.lattice.a == pytest.approx(5.69, abs=1e-6)


def test_read_extxyz_through_ase(tmp_path):
    import ase.io

    atoms = nacl_primitive().to_ase_atoms()
    ase.io.write(tmp_path / "nacl.extxyz", atoms, format="extxyz")
    back = read_structure(tmp_path / "nacl.extxyz")
    assert back.composition.reduced_formula == "NaCl"
    assert np.allclose(back.lattice.matrix, atoms.cell[:])


def test_vasp4_poscars_of_phonopy_examples(shared_data):
    # VASP 4 format, species on the comment line (phonopy's convention): pymatgen alone would
    # call the atoms H and He
    root = shared_data / "dft-phonons"
    si = read_structure(root / "Si" / "POSCAR-unitcell")
    assert si.composition.reduced_formula == "Si" and len(si) == 2
    a = 2 * 0.5071343999939496 * 5.3893  # scale * vector component: conventional edge, Å
    assert si.volume == pytest.approx(a**3 / 4, rel=1e-9)  # fcc primitive cell
    nacl = read_structure(root / "NaCl" / "POSCAR-unitcell")
    assert nacl.composition.formula == "Na4 Cl4"
    assert nacl.lattice.abc == pytest.approx((5.6903014761756712,) * 3)
    assert [str(sp) for sp in nacl.species] == ["Na"] * 4 + ["Cl"] * 4


def test_poscar_without_species_names_is_refused(tmp_path):
    # VASP 4 format without species anywhere: refuse (instead of H, He...) and name the file
    text = "my crystal\n1.0\n0 2.8 2.8\n2.8 0 2.8\n2.8 2.8 0\n1 1\nDirect\n0 0 0\n0.5 0.5 0.5\n"
    path = tmp_path / "POSCAR-old"
    path.write_text(text)
    with pytest.raises(InputError, match="without element names") as err:
        read_structure(path)
    assert "POSCAR-old" in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.cif", "this is not a crystal structure\n\x00\x01 garbage", "cannot read"),
        ("empty.cif", "", "is empty"),
        ("water.xyz", "3\nwater\nO 0 0 0\nH 0.76 0.59 0\nH -0.76 0.59 0\n", "cannot read"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        read_structure(path)
    assert err.value.material_id == name
    assert str(err.value).startswith(name)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_structure(tmp_path / "nope.cif", material_id="mp-0")


# --- validation ------------------------------------------------------------------------------
def test_valid_structure_passes():
    s = nacl_primitive()
    assert validate_structure(s, "NaCl") is s


def test_disordered_structure_is_refused():
    s = Structure(Lattice.cubic(3.7), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(InputError, match="disordered or partially occupied") as err:
        validate_structure(s, "CuAu-alloy")
    assert str(err.value).startswith("CuAu-alloy")


def test_partial_occupancy_is_refused():
    s = Structure(Lattice.cubic(4.0), [{"Na": 0.9}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(InputError, match="partially occupied"):
        validate_structure(s, "NaCl-vac")


def test_overlapping_atoms_are_refused():
    s = Structure(Lattice.cubic(5.0), ["Cu", "Cu"], [[0, 0, 0], [0.04, 0, 0]])  # 0.2 Å apart
    with pytest.raises(InputError, match="overlapping atoms") as err:
        validate_structure(s, "Cu-bad")
    assert "0.200 Å" in str(err.value)
    assert err.value.material_id == "Cu-bad"


def test_overlap_with_a_periodic_image_is_found():
    # two atoms 0.45 Å apart only across the cell boundary
    s = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0.01, 0, 0], [0.9975, 0, 0]])
    pair = closest_pair(s, 0.5)
    assert pair is not None and pair[2] == pytest.approx(0.05, abs=1e-6)
    with pytest.raises(InputError, match="overlapping"):
        validate_structure(s, "Cu-image")


def test_empty_and_non_periodic_inputs_are_refused():
    with pytest.raises(InputError, match="no atoms"):
        validate_structure(Structure(Lattice.cubic(3.0), [], []), "empty")
    with pytest.raises(InputError, match="periodic crystal"):
        validate_structure(Molecule(["H", "H"], [[0, 0, 0], [0.74, 0, 0]]), "H2")


def test_unsupported_elements_name_material_and_elements():
    with pytest.raises(UnsupportedElementsError, match="Cl, Na") as err:
        check_elements(nacl_primitive(), frozenset({"Cu", "Al"}), "emt", "NaCl-1")
    assert err.value.material_id == "NaCl-1"
    check_elements(nacl_primitive(), None, "vasp")  # None: every element


# --- naming and hashing -------------------------------------------------------------------------
def test_material_id_is_stable_across_settings_and_site_order():
    prim = nacl_primitive()
    conv = nacl_conventional()
    shuffled = Structure(conv.lattice, conv.species[::-1], conv.frac_coords[::-1])
    shifted = conv.copy()
    shifted.translate_sites(list(range(len(shifted))), [0.13, 0.27, 0.41])
    ids = {material_id_for(s) for s in (prim, conv, shuffled, shifted)}
    assert len(ids) == 1
    (mid,) = ids
    formula, digest = mid.split("-")
    assert formula == "NaCl" and len(digest) == 8 and int(digest, 16) >= 0


def test_material_id_tells_materials_apart():
    assert material_id_for(nacl_primitive(5.69)) != material_id_for(nacl_primitive(5.40))
    kcl = nacl_primitive(6.3)
    kcl.replace_species({"Na": "K"})
    assert material_id_for(kcl).startswith("KCl-")


def test_structure_hash_depends_on_structure_and_settings():
    s = nacl_primitive()
    h = structure_hash(s)
    assert h == structure_hash(s.copy()) and len(h) == 64
    assert structure_hash(s, {"encut": 520}) != h
    moved = s.copy()
    moved.translate_sites([0], [0.001, 0, 0], frac_coords=False)
    assert structure_hash(moved) != h
