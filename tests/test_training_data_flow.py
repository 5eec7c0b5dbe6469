"""The training-data flow end to end with run_locally on the embedded store:
structures -> relax -> perturb -> label -> training set, bad materials recorded, the others go on."""

from __future__ import annotations

import numpy as np
import pytest
from jobflow import run_locally
from pymatgen.core import Lattice, Structure

from phonon_flows.core.training_set import read_extxyz
from phonon_flows.engines.reference import EmtEngine
from phonon_flows.errors import CalculationError
from phonon_flows.flows import TrainingDataMaker, prepare_materials
from phonon_flows.makers.perturb import PerturbationMaker
from phonon_flows.schemas.training_set import TrainingSetDoc
from phonon_flows.store import get_store


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fcc_conventional(symbol: str, a: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [symbol], [[0, 0, 0]])


def fcc_primitive(symbol: str, a: float) -> Structure:
    h = a / 2
    return Structure(Lattice([[0, h, h], [h, 0, h], [h, h, 0]]), [symbol], [[0, 0, 0]])


def cu3au() -> Structure:
    return Structure(Lattice.cubic(3.75), ["Au", "Cu", "Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def nial() -> Structure:
    return Structure(Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def nacl() -> Structure:
    h = 5.69 / 2
    return Structure(Lattice([[0, h, h], [h, 0, h], [h, h, 0]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def big_cell() -> Structure:
    """256-atom Cu cell with one Au: no translation symmetry, so no supercell fits 100-200 atoms."""
    s = fcc_conventional("Cu", 3.62).make_supercell([4, 4, 4], in_place=False)
    s.replace(0, "Au")
    return s


def test_emt_flow_with_good_and_bad_materials(tmp_path, monkeypatch):
    # runtime failures the inputs cannot reveal: labelling Pd and relaxing Pt break
    real_compute, real_calculator = EmtEngine._compute, EmtEngine.calculator

    def compute(self, atoms_list):
        if any("Pd" in a.get_chemical_symbols() for a in atoms_list):
            raise CalculationError("EMT blew up (test)")
        return real_compute(self, atoms_list)

    def calculator(self):
        calc = real_calculator(self)
        real_calc = calc.calculate

        def calculate(atoms=None, *args, **kwargs):
            if atoms is not None and "Pt" in atoms.get_chemical_symbols():
                raise CalculationError("EMT relaxation diverged (test)")
            return real_calc(atoms, *args, **kwargs)

        calc.calculate = calculate
        return calc

    monkeypatch.setattr(EmtEngine, "_compute", compute)
    monkeypatch.setattr(EmtEngine, "calculator", calculator)

    broken = tmp_path / "broken.cif"
    broken.write_text("data_broken\n_cell_length_a not-a-number\n")
    disordered = Structure(Lattice.cubic(3.7), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    overlapping = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0.03, 0, 0]])

    inputs = {
        "Cu": fcc_conventional("Cu", 3.70),  # 4-atom cell of a 1-atom primitive cell -> 4x4x4
        "Al": fcc_primitive("Al", 4.00),
        "Cu3Au": cu3au(),
        "NiAl": nial(),
        "Pd": fcc_primitive("Pd", 3.95),  # fails in labelling
        "Pt": fcc_primitive("Pt", 3.98),  # fails in relaxation
        "broken": broken,
        "CuAu-disordered": disordered,
        "Cu-overlap": overlapping,
        "NaCl": nacl(),  # EMT has no Na, Cl
        "Cu255Au": big_cell(),  # no supercell in 100-200 atoms
    }
    maker = TrainingDataMaker.with_reference("emt", perturbation_maker=PerturbationMaker(n_structures=2))
    flow = maker.make(inputs)
    store = get_store(store_dir=tmp_path / "store")
    responses = run_locally(flow, store=store, root_dir=tmp_path, log=False)
    doc = responses[flow.output.uuid][1].output
    assert isinstance(doc, TrainingSetDoc)

    assert doc.material_ids == ["Cu", "Al", "Cu3Au", "NiAl"]
    assert doc.n_structures == 8 and doc.structures_per_material == dict.fromkeys(doc.material_ids, 2)
    failed = {f.material_id: f for f in doc.failed}
    assert set(failed) == {"Pd", "Pt", "broken", "CuAu-disordered", "Cu-overlap", "NaCl", "Cu255Au"}
    expected = {
        "broken": ("input", "cannot read"),
        "CuAu-disordered": ("input", "disordered"),
        "Cu-overlap": ("input", "overlapping atoms"),
        "NaCl": ("input", "no parameters for element(s) Cl, Na"),
        "Cu255Au": ("input", "no supercell of this 256-atom cell"),
        "Pd": ("label", "failed"),
        "Pt": ("relax", "failed"),
    }
    for mid, (stage, words) in expected.items():
        assert failed[mid].stage == stage, (mid, failed[mid])
        assert words in failed[mid].reason, (mid, failed[mid])

    # every labelled structure says which engine made it
    assert [(e.name, e.kind) for e in doc.engines] == [("emt", "reference")]
    atoms = read_extxyz(doc.xyz)
    assert len(atoms) == 8 and {a.info["engine"] for a in atoms} == {"emt"}
    sizes = {a.info["material_id"]: len(a) for a in atoms}
    assert sizes["Cu"] == sizes["Al"] == 64  # 4x4x4 primitive cells
    assert 100 <= sizes["Cu3Au"] <= 200 and 100 <= sizes["NiAl"] <= 200
    assert doc.statistics.element_counts == {"Al": 2, "Au": 1, "Cu": 2, "Ni": 1}

    # the stored documents: relaxations, perturbations (every atom moved within bounds), forces
    store.connect()
    perturbations = list(store.query({"output.supercell_matrix": {"$exists": True}}, load=True))
    assert {p["output"]["material_id"] for p in perturbations} == {"Cu", "Al", "Cu3Au", "NiAl", "Pd"}
    for p in perturbations:
        st = p["output"]["statistics"]
        assert st["n_atoms_moved"] == st["n_structures"] * st["n_atoms"]
        assert 0.01 <= st["min"] <= st["max"] <= 0.05
    relaxed = {d["output"]["material_id"]: d["output"] for d in store.query({"output.enthalpy_per_atom": {"$exists": True}})}
    assert set(relaxed) == {"Cu", "Al", "Cu3Au", "NiAl", "Pd"}
    assert all(r["engine"]["name"] == "emt" for r in relaxed.values())
    # EMT Cu relaxes to a = 3.59 Å (from 3.70)
    cu_volume = Structure.from_dict(relaxed["Cu"]["structure"]).volume
    assert cu_volume == pytest.approx(3.59**3, rel=0.01)


def test_chgnet_labelling_flow(tmp_path):
    maker = TrainingDataMaker.with_reference(
        "chgnet",
        engine_kwargs={"device": "cpu"},
        perturbation_maker=PerturbationMaker(n_structures=2, min_atoms=8, max_atoms=16),
    )
    flow = maker.make([nacl()], material_ids=["NaCl"])
    store = get_store(store_dir=tmp_path / "store")
    responses = run_locally(flow, store=store, root_dir=tmp_path, log=False, ensure_success=True)
    doc = responses[flow.output.uuid][1].output
    assert doc.material_ids == ["NaCl"] and doc.n_structures == 2 and not doc.failed
    (engine,) = doc.engines
    assert engine.name == "chgnet" and engine.version == "0.3.0" and engine.kind == "reference"
    atoms = read_extxyz(doc.xyz)
    e_per_atom = [a.info["REF_energy"] / len(a) for a in atoms]
    # CHGNet (fit to MP PBE energies) gives NaCl about -3.67 eV/atom
    assert all(-3.8 < e < -3.5 for e in e_per_atom)
    forces = np.concatenate([a.arrays["REF_forces"] for a in atoms])
    assert 1e-3 < np.abs(forces).max() < 1.0  # displaced by 0.01-0.05 Å: small but non-zero forces
    assert np.abs(forces.sum(axis=0)).max() < 1e-3 * len(forces)


def test_vasp_flow_layout():
    """The VASP variant: atomate2 relaxations, then one VASP single point per perturbed supercell."""
    flow = TrainingDataMaker.with_vasp(perturbation_maker=PerturbationMaker(n_structures=3)).make({"NaCl": nacl()})
    jobs = [j for j, _ in flow.iterflow()]
    names = [j.name for j in jobs]
    assert sum(n.startswith("recipe relax") for n in names) == 2
    assert sum(n.startswith("recipe static") for n in names) == 3
    assert sum(n.startswith("vasp forces") for n in names) == 3
    assert names[-1] == "training set"
    assert all(j.config.manager_config.get("_category") == "cpu" for j in jobs)


def test_prepare_materials_names_inputs(tmp_path):
    kcl = nacl()
    kcl.replace_species({"Na": "K"})
    good, bad = prepare_materials([nacl(), kcl, tmp_path / "missing.cif"])
    ids = [mid for mid, _ in good]
    assert len(ids) == 2 and ids[0].startswith("NaCl-") and ids[1].startswith("KCl-")
    assert bad[0].material_id == "missing.cif" and "does not exist" in bad[0].reason
    # the same id given twice: the second is renamed, nothing is lost
    good, bad = prepare_materials([nacl(), kcl], material_ids=["X", "X"])
    assert [mid for mid, _ in good] == ["X", "X-2"] and not bad
