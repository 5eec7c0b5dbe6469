"""Training sets: extxyz read back by MACE's own loader, Fig. 2 statistics, TrainingSetMaker."""

from __future__ import annotations

import numpy as np
import pytest
from ase.stress import full_3x3_to_voigt_6_stress
from jobflow import run_locally
from pymatgen.core import Lattice, Structure

from phonon_flows.core.perturb import perturb_supercell
from phonon_flows.core.supercells import make_supercell
from phonon_flows.core.training_set import (
    density_g_cm3,
    labelled_atoms,
    read_extxyz,
    training_set_statistics,
    write_extxyz,
)
from phonon_flows.makers.reference import ReferenceForceMaker
from phonon_flows.makers.training_set import TrainingSetMaker
from phonon_flows.schemas.common import MaterialError
from phonon_flows.schemas.training_set import TrainingSetDoc
from phonon_flows.store import get_store


def fcc_metal(symbol: str, a: float) -> Structure:
    h = a / 2
    return Structure(Lattice([[0, h, h], [h, 0, h], [h, h, 0]]), [symbol], [[0, 0, 0]])


def emt_docs(symbol: str, a: float, n: int = 2, seed: int = 0):
    sc = make_supercell(fcc_metal(symbol, a), np.diag([2, 2, 2]))
    structures = perturb_supercell(sc, n_structures=n, seed=seed).structures
    return ReferenceForceMaker(engine="emt").label(structures, f"{symbol}-test")


def mace_configs(path):
    from mace.data.utils import KeySpecification, load_from_xyz, update_keyspec_from_kwargs

    # what mace_run_train does with --energy_key/--forces_key/--stress_key
    keys = update_keyspec_from_kwargs(
        KeySpecification.from_defaults(),
        {"energy_key": "REF_energy", "forces_key": "REF_forces", "stress_key": "REF_stress"},
    )
    _, configs = load_from_xyz(str(path), key_specification=keys)
    return configs


def test_extxyz_read_back_by_mace(tmp_path):
    docs = emt_docs("Cu", 3.61) + emt_docs("Al", 4.05)
    atoms = [
        labelled_atoms(d.structure, d.energy, d.forces, d.stress, material_id=d.material_id) for d in docs
    ]
    path = tmp_path / "train.xyz"
    path.write_text(write_extxyz(atoms))
    configs = mace_configs(path)
    assert len(configs) == 4
    for doc, cfg in zip(docs, configs, strict=True):
        assert cfg.properties["energy"] == pytest.approx(doc.energy)
        # extxyz writes per-atom columns with 8 decimals
        np.testing.assert_allclose(cfg.properties["forces"], np.array(doc.forces), atol=5.1e-9)
        stress = np.asarray(cfg.properties["stress"])
        expected = np.array(doc.stress) if stress.size == 9 else full_3x3_to_voigt_6_stress(np.array(doc.stress))
        np.testing.assert_allclose(stress.reshape(expected.shape), expected, atol=1e-12)
        np.testing.assert_allclose(cfg.positions, doc.structure.cart_coords, atol=5.1e-9)
        np.testing.assert_allclose(cfg.cell, doc.structure.lattice.matrix, atol=1e-10)
        assert cfg.property_weights["forces"] == 1.0 and cfg.property_weights["energy"] == 1.0
        assert cfg.config_type == "perturbed"
    # and the info keys survive a plain ASE read
    back = read_extxyz(path.read_text())
    assert back[0].info["material_id"] == "Cu-test" and back[0].calc is None


def test_statistics_against_hand_values():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.615), ["Cu"], [[0, 0, 0]])
    rng = np.random.default_rng(0)
    a1 = labelled_atoms(nacl, -3.4 * 8, rng.normal(size=(8, 3)), material_id="NaCl")
    a2 = labelled_atoms(nacl, -3.5 * 8, rng.normal(size=(8, 3)), material_id="NaCl")
    a3 = labelled_atoms(cu, -4.0 * 4, rng.normal(size=(4, 3)), material_id="Cu")
    stats = training_set_statistics([a1, a2, a3], n_bins=10)
    assert stats["n_materials"] == 2 and stats["n_structures"] == 3 and stats["n_atoms"] == 20
    assert stats["element_counts"] == {"Cl": 1, "Cu": 1, "Na": 1}
    assert stats["element_atom_counts"] == {"Cl": 8, "Cu": 4, "Na": 8}
    e = stats["energy_per_atom"]
    assert (e["min"], e["max"]) == pytest.approx((-4.0, -3.4)) and sum(e["counts"]) == 3 and len(e["bin_edges"]) == 11
    f = stats["force_components"]
    all_f = np.concatenate([a.arrays["REF_forces"].ravel() for a in (a1, a2, a3)])
    assert f["n"] == 60 and f["min"] == pytest.approx(all_f.min()) and f["std"] == pytest.approx(all_f.std())
    v = stats["volume_per_atom"]
    assert v["min"] == pytest.approx(3.615**3 / 4) and v["max"] == pytest.approx(5.69**3 / 8)
    # densities from rho = Z M / (N_A a^3): NaCl 4 x 58.443 g/mol, Cu 4 x 63.546 g/mol
    n_a = 6.02214076e23
    rho_nacl = 4 * 58.443 / (n_a * (5.69e-8) ** 3)
    rho_cu = 4 * 63.546 / (n_a * (3.615e-8) ** 3)
    assert density_g_cm3(a1) == pytest.approx(rho_nacl, rel=1e-4)
    assert stats["density"]["max"] == pytest.approx(rho_cu, rel=1e-4)  # 8.93 g/cm^3
    assert rho_cu == pytest.approx(8.93, abs=0.01)


def test_training_set_maker_skips_and_records_failures():
    cu, al, ag = emt_docs("Cu", 3.61), emt_docs("Al", 4.05), emt_docs("Ag", 4.09)
    doc = TrainingSetMaker().collect(
        [cu, al[0], None, ag],  # Al: one of its two labelling outputs is missing
        ["Cu-test", "Al-test", "Al-test", "Ag-test"],
        failed=[MaterialError(material_id="NaCl-x", stage="input", reason="engine emt has no parameters for Cl, Na")],
        checkpoints={"Al-test": {"relax": "Al-test", "perturb": "Al-test"}},
    )
    assert isinstance(doc, TrainingSetDoc)
    assert doc.material_ids == ["Cu-test", "Ag-test"] and doc.n_structures == 4
    assert doc.structures_per_material == {"Cu-test": 2, "Ag-test": 2}
    failed = {f.material_id: f for f in doc.failed}
    assert set(failed) == {"NaCl-x", "Al-test"}
    assert failed["Al-test"].stage == "label" and "1 of 2" in failed["Al-test"].reason
    assert [e.name for e in doc.engines] == ["emt"] and doc.engines[0].kind == "reference"
    assert doc.statistics.element_counts == {"Ag": 1, "Cu": 1}
    assert len(read_extxyz(doc.xyz)) == 4
    # keep_partial keeps Al's labelled structure, still recording the failure
    partial = TrainingSetMaker(keep_partial=True).collect([cu, al[0], None], ["Cu-test", "Al-test", "Al-test"])
    assert partial.structures_per_material == {"Cu-test": 2, "Al-test": 1}
    assert partial.failed[0].material_id == "Al-test" and "kept" in partial.failed[0].reason


def test_failed_stage_from_checkpoints():
    doc = TrainingSetMaker().collect(
        [None, None], ["A", "B"], checkpoints={"A": {"relax": None, "perturb": None}, "B": {"relax": "B", "perturb": None}}
    )
    stages = {f.material_id: f.stage for f in doc.failed}
    assert stages == {"A": "relax", "B": "perturb"}
    assert doc.n_structures == 0 and doc.statistics.energy_per_atom.n == 0


def test_training_set_job_puts_xyz_in_data_store(tmp_path):
    store = get_store(store_dir=tmp_path / "store")
    job = TrainingSetMaker().make(emt_docs("Cu", 3.61), ["Cu-test"] * 2)
    run_locally(job, store=store, root_dir=tmp_path, log=False, ensure_success=True)
    store.connect()
    raw = store.query_one({"uuid": job.uuid}, load=False)
    assert "blob_uuid" in raw["output"]["xyz"]
    doc = TrainingSetDoc.model_validate(store.get_output(job.uuid, load=True))
    assert doc.n_structures == 2 and len(read_extxyz(doc.xyz)) == 2
    path = tmp_path / "train.xyz"
    path.write_text(doc.xyz)
    assert len(mace_configs(path)) == 2


def test_engines_are_keyed_on_identity_not_on_the_job_folder():
    """VASP ForceDocs differ by their job folder and per-structure INCAR tags: one engine."""
    from phonon_flows.engines.vasp import vasp_engine_info

    docs = emt_docs("Cu", 3.61, n=3)
    vasp = [d.model_copy(update={"engine": vasp_engine_info(
        "static", version="6.4.2", incar={"ENCUT": 520, "MAGMOM": [0.6] * (i + 1)}, provenance=f"/scratch/job-{i}")})
        for i, d in enumerate(docs)]
    doc = TrainingSetMaker().collect(vasp, ["Cu-test"] * 3)
    assert len(doc.engines) == 1 and doc.engines[0].name == "vasp" and doc.engines[0].provenance is None
    assert doc.engines[0].settings["incar"] == {"ENCUT": 520}
    other = vasp[0].model_copy(update={"engine": vasp_engine_info("static", version="6.4.2", incar={"ENCUT": 600})})
    assert len(TrainingSetMaker().collect([*vasp, other], ["Cu-test"] * 4).engines) == 2  # other settings: two


def test_a_failed_calculation_carries_its_cause_into_the_training_set():
    from phonon_flows.schemas.forces import FailedCalculation

    cu = emt_docs("Cu", 3.61)
    bad = FailedCalculation(material_id="Cu-test", perturbation_index=1, dir_name="/scratch/job-7",
                            reason="MaxCorrectionsPerJobError: Max errors per job reached: 5.; custodian found: brmix",
                            custodian_errors=["brmix"])
    doc = TrainingSetMaker().collect([[cu[0], bad.model_dump()]], ["Cu-test"])
    assert doc.material_ids == [] and "custodian found: brmix" in doc.failed[0].reason
    assert "1 of 2 labelling output(s) missing" in doc.failed[0].reason
