"""Reference engines (EMT, CHGNet 0.3.0), their relaxation, and the reference makers."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from phonon_flows.engines import get_engine
from phonon_flows.engines.reference import (
    CHGNET_MAX_Z,
    ChgnetEngine,
    EmtEngine,
    chgnet_elements,
    emt_elements,
    get_reference_engine,
    reference_engine_elements,
    relax_structure,
)
from phonon_flows.errors import UnsupportedElementsError
from phonon_flows.makers.reference import ReferenceForceMaker, ReferenceRelaxMaker
from phonon_flows.schemas.forces import ForceDoc, RelaxDoc


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def nacl(a: float = 5.69) -> Structure:
    h = a / 2
    return Structure(Lattice([[0, h, h], [h, 0, h], [h, h, 0]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def rattled_cu(seed: int = 0):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.03, seed=seed)
    return atoms


# --- EMT ------------------------------------------------------------------------------------
def test_emt_elements_and_info():
    engine = get_reference_engine("emt")
    assert engine.supported_elements == emt_elements() == frozenset(["Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O"])
    info = engine.info
    assert info.name == "emt" and info.kind == "reference" and "NOT DFT" in info.label
    assert isinstance(get_engine("emt"), EmtEngine)


def test_emt_forces_are_energy_derivatives():
    atoms = rattled_cu()
    (res,) = get_reference_engine("emt").compute([atoms])
    atoms.calc = EMT()
    assert res.energy == pytest.approx(atoms.get_potential_energy())
    # central finite differences of the energy (an outside check of the forces)
    h = 1e-4
    for i, k in [(0, 0), (3, 1), (7, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        plus.calc, minus.calc = EMT(), EMT()
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert res.forces[i, k] == pytest.approx(fd, abs=1e-5)
    # stress in ASE's convention against ASE's numerical stress
    from ase.calculators.fd import calculate_numerical_stress

    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(res.stress, numerical, atol=1e-6)


def test_emt_unsupported_element_names_the_material():
    with pytest.raises(UnsupportedElementsError, match="Cl, Na") as err:
        get_reference_engine("emt").compute([nacl().to_ase_atoms()], material_id="NaCl-emt")
    assert err.value.material_id == "NaCl-emt"
    with pytest.raises(UnsupportedElementsError, match="Cl, Na"):
        ReferenceForceMaker(engine="emt").label(nacl(), "NaCl-emt")


def test_emt_relaxation_of_copper():
    # EMT's Cu lattice constant is 3.59 Å (ASE documentation); the relaxation keeps Fm-3m
    start = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.70, cubic=True))
    res = relax_structure(start, get_reference_engine("emt"), fmax=1e-4)
    assert res.converged and res.max_force < 1e-4
    assert res.structure.lattice.a == pytest.approx(3.59, abs=0.01)
    assert SpacegroupAnalyzer(res.structure, symprec=1e-3).get_space_group_number() == 225
    assert np.abs(res.stress).max() < 1e-3
    assert res.enthalpy_per_atom == pytest.approx(res.energy_per_atom)
    # under pressure the cell shrinks and H = E + PV
    hp = relax_structure(start, get_reference_engine("emt"), fmax=1e-4, pressure=10.0)
    assert hp.structure.volume < res.structure.volume
    pv = 10.0 / 160.21766208 * hp.structure.volume / len(hp.structure)
    assert hp.enthalpy_per_atom == pytest.approx(hp.energy_per_atom + pv, rel=1e-6)


def test_reference_relax_maker_document():
    start = AseAtomsAdaptor.get_structure(bulk("Al", "fcc", a=4.2))
    doc = ReferenceRelaxMaker(engine="emt", fmax=1e-3).relax(start, "Al-test")
    assert isinstance(doc, RelaxDoc)
    assert doc.material_id == "Al-test" and doc.engine.name == "emt" and doc.engine.kind == "reference"
    assert doc.converged and doc.max_force <= 1e-3
    assert doc.volume_change == pytest.approx(doc.structure.volume / start.volume - 1)
    assert doc.engine.settings["relax"]["fmax"] == 1e-3
    # a volume change of more than 3 % is reported; a small one is not
    assert abs(doc.volume_change) > 0.03 and "changed the volume by" in doc.warnings[0] and "Al-test" in doc.warnings[0]
    near = ReferenceRelaxMaker(engine="emt", fmax=1e-3).relax(doc.structure, "Al-relaxed")
    assert abs(near.volume_change) < 0.03 and near.warnings == []


def test_reference_force_maker_single_and_batch():
    s = AseAtomsAdaptor.get_structure(rattled_cu())
    maker = ReferenceForceMaker(engine="emt")
    one = maker.label(s, "Cu-test", perturbation_index=4)
    assert isinstance(one, ForceDoc) and one.perturbation_index == 4 and one.engine.name == "emt"
    many = maker.label([s, s.copy()], "Cu-test")
    assert [d.perturbation_index for d in many] == [0, 1]
    np.testing.assert_allclose(many[0].forces, one.forces)
    assert one.max_force == pytest.approx(np.linalg.norm(one.forces, axis=1).max())
    assert np.array(one.stress).shape == (3, 3)


def test_unknown_engine():
    with pytest.raises(ValueError, match="unknown reference engine"):
        get_reference_engine("lj")
    assert reference_engine_elements("chgnet") == chgnet_elements()


# --- CHGNet ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chgnet():
    return get_reference_engine("chgnet", device="cpu")


def test_chgnet_model_and_info(chgnet):
    assert isinstance(chgnet, ChgnetEngine)
    assert chgnet.model.atom_embedding.embedding.num_embeddings == CHGNET_MAX_Z == 94
    assert chgnet.supported_elements == chgnet_elements()
    info = chgnet.info
    assert info.name == "chgnet" and info.kind == "reference" and info.version == "0.3.0"
    assert info.model_sha256 and len(info.model_sha256) == 64
    assert "NOT DFT" in info.label


def test_chgnet_batch_matches_chgnets_own_calculator(chgnet):
    from chgnet.model.dynamics import CHGNetCalculator

    s1 = nacl()
    s1.perturb(0.03, min_distance=0.01)
    s2 = nacl(5.75)
    s2.perturb(0.02, min_distance=0.01)
    results = chgnet.compute([s1.to_ase_atoms(), s2.to_ase_atoms()])
    calc = CHGNetCalculator(model=chgnet.model, use_device="cpu")
    for s, res in zip((s1, s2), results, strict=True):
        atoms = s.to_ase_atoms()
        atoms.calc = calc
        assert res.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(res.forces, atoms.get_forces(), atol=1e-4)
        np.testing.assert_allclose(res.stress, atoms.get_stress(), atol=1e-5)  # eV/Å^3, ASE sign
    # a compressed cell pushes outwards: ASE's stress is negative (compressive)
    compressed = chgnet.compute([nacl(5.3).to_ase_atoms()])[0]
    assert compressed.stress[:3].max() < 0


def test_chgnet_relaxed_nacl_close_to_dft(chgnet, shared_data):
    # PBE lattice constant of NaCl from phonopy's example (VASP): 5.6903 Å
    start = nacl(5.60)
    res = relax_structure(start, chgnet, fmax=1e-3)
    a = res.structure.lattice.a * np.sqrt(2)
    assert a == pytest.approx(5.6903, rel=0.01)
    assert res.converged
    assert -4.0 < res.energy_per_atom < -3.3  # CHGNet is fit to MP's PBE energies (NaCl: -3.4 to -3.7 eV/atom)
