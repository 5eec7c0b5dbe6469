"""PhononMaker through jobflow (run_locally on an embedded store) with ASE's EMT, checked against
phonopy + ASE driven directly; failures become failed documents, not crashed campaigns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from jobflow import Maker, job, run_locally
from pymatgen.io.ase import AseAtomsAdaptor

from _phonopy_reference import phonopy_with_calculator

from phonon_flows.makers.phonons import PhononMaker, phonon_settings, phonons_from_forces
from phonon_flows.schemas.phonon import PHONON_DATA_FIELDS, PhononDoc
from phonon_flows.store import get_store

CU_A = 3.61
FCC_CUBIC_2 = [[-2, 2, 2], [2, -2, 2], [2, 2, -2]]  # 2x2x2 conventional cubic cells: 32 atoms


def _cu(lattice="fcc", a=CU_A):
    return AseAtomsAdaptor.get_structure(bulk("Cu", lattice, a=a))


def _run(flow, tmp_path):
    store = get_store(store_dir=tmp_path / "store")
    responses = run_locally(flow, store=store, log=False, ensure_success=True)
    return store, responses


def _doc_from_store(store, uuid) -> PhononDoc:
    store.connect()
    out = store.get_output(uuid, load=True)
    return PhononDoc.model_validate(out)


def _phonopy_emt_reference(structure, smat, temperatures=(300.0, 1000.0)):
    """phonopy + ASE EMT directly, nothing of phonon_flows: forces, FCs, mesh, thermal, bands."""
    from phonopy.phonon.grid import length2mesh
    from phonopy.physical_units import get_physical_units

    ph = phonopy_with_calculator(structure, smat, EMT())
    ph.produce_force_constants()
    ph.symmetrize_force_constants(show_drift=False)
    mesh = length2mesh(75.0, ph.primitive.cell).tolist()
    ph.run_mesh(mesh, is_gamma_center=True)
    ph.run_thermal_properties(temperatures=list(temperatures), cutoff_frequency=0.1)
    tp = ph.thermal_properties
    n = len(ph.primitive)
    conv = 1000.0 / get_physical_units().EvTokJmol / n
    ph.auto_band_structure(npoints=101)
    return {
        "mesh": mesh,
        "A": [float(x) * conv for x in tp.free_energy],
        "Cv": [float(x) / n for x in tp.heat_capacity],
        "S": [float(x) / n for x in tp.entropy],
        "bands": np.concatenate(ph.band_structure.frequencies),
    }


def test_emt_phonons_through_run_locally_land_in_the_data_store(tmp_path):
    cu = _cu()
    maker = PhononMaker(engine="emt")
    job = maker.make(cu, material_id="Cu-fcc", supercell_matrix=FCC_CUBIC_2)
    assert job.config.manager_config == {"_category": "cpu"}
    store, responses = _run(job, tmp_path)

    # summary in the documents store, large arrays as references to the data store
    raw = store.query_one({"uuid": job.uuid}, load=False)["output"]
    for key in PHONON_DATA_FIELDS:
        assert raw[key]["store"] == "data" and raw[key]["blob_uuid"], key
    assert raw["thermal"]["T300"]["Cv_J_per_K_mol"] > 0 and raw["material_id"] == "Cu-fcc"
    data_store = store.additional_stores["data"]
    blobs = {b["blob_uuid"] for b in data_store.query({"job_uuid": job.uuid})}
    assert {raw[k]["blob_uuid"] for k in PHONON_DATA_FIELDS} <= blobs

    doc = _doc_from_store(store, job.uuid)
    assert not doc.failed and doc.errors == []
    assert doc.engine.name == "emt" and doc.engine.kind == "reference"
    assert doc.natom_primitive == 1 and doc.natom_supercell == 32 and doc.n_displacements == 1
    fc = np.array(doc.force_constants.force_constants)
    assert fc.shape == (1, 32, 3, 3) == tuple(doc.force_constants.shape)
    np.testing.assert_allclose(fc.sum(axis=1), 0, atol=1e-8)  # acoustic sum rule

    ref = _phonopy_emt_reference(cu, FCC_CUBIC_2)
    assert doc.mesh == ref["mesh"]
    for i, key in enumerate(("300", "1000")):
        assert doc.thermal[key].A_vib_meV_per_atom == pytest.approx(ref["A"][i], rel=1e-6)
        assert doc.thermal[key].Cv_J_per_K_mol == pytest.approx(ref["Cv"][i], rel=1e-6)
        assert doc.thermal[key].S_J_per_K_mol == pytest.approx(ref["S"][i], rel=1e-6)
    np.testing.assert_allclose(np.array(doc.band_structure.frequencies), ref["bands"], rtol=1e-6, atol=1e-6)
    assert doc.dynamically_stable

    # the reference engine's energy of the unit cell is the enthalpy per atom (P = 0)
    atoms = bulk("Cu", "fcc", a=CU_A)
    atoms.calc = EMT()
    assert doc.enthalpy_per_atom_eV == pytest.approx(atoms.get_potential_energy() / len(atoms), abs=1e-10)


def test_stability_flag_on_bcc_copper(tmp_path):
    """bcc Cu is dynamically unstable (EMT, like DFT): imaginary modes well below -0.5 THz."""
    maker = PhononMaker(engine="emt")
    job = maker.make(_cu("bcc", 2.87), material_id="Cu-bcc", supercell_matrix=[3, 3, 3])
    store, responses = _run(job, tmp_path)
    doc = responses[job.uuid][1].output
    assert not doc.failed
    assert doc.dynamically_stable is False
    assert doc.min_frequency_THz < -0.5
    mode = doc.most_negative_mode
    assert mode.frequency_THz == doc.min_frequency_THz and mode.band_index == 0
    # the summary in the store is queryable by the flag
    store.connect()
    assert store.query_one({"output.dynamically_stable": False, "output.material_id": "Cu-bcc"}) is not None
    # a tolerance below the softest mode calls the same crystal stable
    loose = PhononMaker(engine="emt", stability_tolerance=doc.min_frequency_THz - 0.1)
    j2 = loose.make(_cu("bcc", 2.87), material_id="Cu-bcc", supercell_matrix=[3, 3, 3])
    _, r2 = _run(j2, tmp_path / "loose")
    assert r2[j2.uuid][1].output.dynamically_stable is True


def test_elements_the_engine_lacks_give_a_failed_doc(tmp_path):
    from pymatgen.core import Lattice, Structure

    nacl = Structure(Lattice.cubic(5.69), ["Na", "Cl"] * 4,
                     [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0.5], [0.5, 0.5, 0.5],
                      [0.5, 0, 0.5], [0, 0, 0.5], [0.5, 0.5, 0], [0, 0.5, 0]])
    job = PhononMaker(engine="emt").make(nacl, material_id="NaCl", supercell_matrix=[2, 2, 2])
    _, responses = _run(job, tmp_path)  # the job itself succeeds
    doc = responses[job.uuid][1].output
    assert doc.failed and doc.dynamically_stable is None and doc.thermal == {}
    assert len(doc.errors) == 1
    assert doc.errors[0].startswith("NaCl") and "Cl, Na" in doc.errors[0]
    assert doc.formula == "NaCl" and doc.engine.name == "emt"


def test_nan_forces_give_a_failed_doc(tmp_path, monkeypatch):
    import phonon_flows.engines as engines
    from phonon_flows.engines.reference import get_reference_engine

    class NaNEngine(type(get_reference_engine("emt"))):
        def _compute(self, atoms_list):
            results = super()._compute(atoms_list)
            results[0].forces[0, 0] = np.nan
            return results

    monkeypatch.setattr(engines, "get_engine", lambda name, **kw: NaNEngine())
    job = PhononMaker(engine="emt").make(_cu(), material_id="Cu-nan", supercell_matrix=FCC_CUBIC_2)
    _, responses = _run(job, tmp_path)
    doc = responses[job.uuid][1].output
    assert doc.failed and "NaN" in doc.errors[0] and "Cu-nan" in doc.errors[0]


def test_force_maker_flow_equals_engine_path(tmp_path):
    """One force job per displaced supercell (the VASP layout), here with the EMT reference
    force maker: same PhononDoc numbers as the batched engine path."""
    from phonon_flows.makers.reference import ReferenceForceMaker

    cu = _cu()
    flow = PhononMaker(force_maker=ReferenceForceMaker(engine="emt")).make(
        cu, material_id="Cu-flow", supercell_matrix=FCC_CUBIC_2
    )
    store, responses = _run(flow, tmp_path)
    doc = _doc_from_store(store, flow.output.uuid)
    direct = PhononMaker(engine="emt").make(cu, material_id="Cu", supercell_matrix=FCC_CUBIC_2)
    _, r2 = _run(direct, tmp_path / "direct")
    ref = r2[direct.uuid][1].output
    assert not doc.failed, doc.errors
    assert doc.engine.name == "emt" and doc.n_displacements == 1
    for key in ("300", "1000"):
        assert doc.thermal[key].A_vib_meV_per_atom == pytest.approx(ref.thermal[key].A_vib_meV_per_atom, rel=1e-9)
    np.testing.assert_allclose(doc.band_structure.frequencies, ref.band_structure.frequencies, atol=1e-6)


@job
def _failing_static(structure):
    raise RuntimeError("VASP did not converge")


@dataclass
class _FailingForceMaker(Maker):
    """Stands for a VASP static that fails (no VASP here)."""

    name: str = "failing static"

    def make(self, structure):
        return _failing_static(structure)


def test_a_failed_force_job_gives_a_failed_doc_and_the_flow_finishes(tmp_path):
    flow = PhononMaker(force_maker=_FailingForceMaker()).make(_cu(), material_id="Cu-fail", supercell_matrix=[4, 4, 4])
    store = get_store(store_dir=tmp_path / "store")
    responses = run_locally(flow, store=store, log=False)
    doc = responses[flow.output.uuid][1].output
    assert doc.failed and "missing" in doc.errors[0] and "Cu-fail" in doc.errors[0]
    assert doc.engine.kind == "dft"  # nothing said otherwise: a force maker stands for DFT


def test_missing_forces_of_a_displacement_give_a_failed_doc():
    cu = _cu()
    settings = phonon_settings()
    from phonon_flows.makers.phonons import generate_phonon_displacements

    disp = generate_phonon_displacements.original(cu, settings, [4, 4, 4])
    assert len(disp["supercells"]) == 1
    doc = phonons_from_forces.original(cu, disp["supercells"], [None], settings, disp["supercell_matrix"],
                                       {"name": "vasp", "kind": "dft"}, "Cu-missing")
    assert doc.failed and "missing" in doc.errors[0] and "Cu-missing" in doc.errors[0]


def test_symfc_from_perturbed_training_supercells_matches_finite_differences(tmp_path):
    """The recipe's perturbed supercells (every atom displaced by 0.01-0.05 Å, pymatgen's atom
    order) with their forces give force constants by symfc close to finite differences."""
    from phonon_flows.core.perturb import perturb_supercell
    from phonon_flows.core.supercells import make_supercell

    cu = _cu()
    smat = np.array(FCC_CUBIC_2)
    perturbed = perturb_supercell(make_supercell(cu, smat), n_structures=6, seed=11).structures
    forces = []
    for s in perturbed:
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = EMT()
        forces.append(atoms.get_forces())
    settings = phonon_settings(fc_method="symfc")
    doc = phonons_from_forces.original(cu, perturbed, forces, settings, smat.tolist(),
                                       {"name": "emt", "kind": "reference"}, "Cu-train")
    assert not doc.failed, doc.errors
    assert doc.fc_method == "symfc" and doc.n_displacements == 6
    fd = _phonopy_emt_reference(cu, smat.tolist())
    assert doc.thermal["300"].A_vib_meV_per_atom == pytest.approx(fd["A"][0], abs=0.5)
    assert doc.thermal["300"].S_J_per_K_mol == pytest.approx(fd["S"][0], abs=0.3)
    assert np.abs(np.array(doc.band_structure.frequencies) - fd["bands"]).max() < 0.15


def test_random_displacement_option_uses_symfc(tmp_path):
    job = PhononMaker(engine="emt", random_displacements=3, displacement=0.02).make(
        _cu(), material_id="Cu-rd", supercell_matrix=FCC_CUBIC_2
    )
    _, responses = _run(job, tmp_path)
    doc = responses[job.uuid][1].output
    assert doc.fc_method == "symfc" and doc.n_displacements == 3 and doc.displacement_A == 0.02
    fd = _phonopy_emt_reference(_cu(), FCC_CUBIC_2)
    assert doc.thermal["300"].A_vib_meV_per_atom == pytest.approx(fd["A"][0], abs=0.5)


def test_supercell_is_chosen_when_not_given(tmp_path):
    from phonon_flows.core.supercells import choose_supercell_matrix

    cu = _cu()
    job = PhononMaker(engine="emt").make(cu, material_id="Cu-auto")
    _, responses = _run(job, tmp_path)
    doc = responses[job.uuid][1].output
    expected = np.asarray(choose_supercell_matrix(cu, min_atoms=100, max_atoms=200)).tolist()
    assert doc.supercell_matrix == expected
    assert doc.natom_supercell == 64  # the recipe's 4x4x4 for a one-atom primitive cell
    assert doc.settings_hash and doc.structure_hash


def test_bad_fc_method_is_refused_when_making():
    from phonon_flows.errors import InputError

    with pytest.raises(InputError, match="fc_method"):
        PhononMaker(engine="emt", fc_method="magic").make(_cu())


def test_mace_engine_is_a_gpu_job():
    job = PhononMaker(engine="mace", engine_kwargs={"model_sha256": "0" * 64}).make(_cu(), supercell_matrix=[4, 4, 4])
    assert job.config.manager_config == {"_category": "gpu"}
    assert job.config.expose_store


# --- MACE: the batched engine path against MACECalculator structure by structure -------------
def _tiny_mace(path):
    """A seeded, untrained, very small ScaleShiftMACE for Cu (float64), saved like a trained model."""
    import mace.calculators  # noqa: F401  (lets e3nn load its constants under recent torch)
    import torch
    from e3nn import o3
    from mace import modules

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(5)
        interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        model = modules.ScaleShiftMACE(
            r_max=4.5, num_bessel=6, num_polynomial_cutoff=5, max_ell=2, interaction_cls=interaction,
            interaction_cls_first=interaction, num_interactions=2, num_elements=1,
            hidden_irreps=o3.Irreps("8x0e + 8x1o"), MLP_irreps=o3.Irreps("8x0e"), gate=torch.nn.functional.silu,
            atomic_energies=np.array([-3.0]), avg_num_neighbors=12.0, atomic_numbers=[29], correlation=2,
            radial_type="bessel", radial_MLP=[16, 16], atomic_inter_scale=2.0, atomic_inter_shift=0.0,
        )
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    torch.save(model, path)
    return path


@pytest.fixture(scope="module")
def cu_mace_model(tmp_path_factory):
    return _tiny_mace(tmp_path_factory.mktemp("mace") / "cu_tiny.model")


def test_mace_phonons_equal_phonopy_with_macecalculator(cu_mace_model, tmp_path, monkeypatch):
    """PhononMaker with a MACE model (all displaced supercells in one batched compute) gives the
    force constants and thermal properties phonopy gives with MACECalculator called structure by
    structure; the model is fetched from the job store by its sha256."""
    import torch
    from mace.calculators import MACECalculator

    from phonon_flows.engines.mace import store_model

    torch.set_num_threads(1)
    monkeypatch.setenv("PHONON_FLOWS_MODEL_CACHE", str(tmp_path / "cache"))
    cu = _cu()
    smat = FCC_CUBIC_2  # 32 atoms
    store = get_store(store_dir=tmp_path / "store")
    store.connect()
    sha = store_model(store, cu_mace_model)
    maker = PhononMaker(engine="mace", engine_kwargs={"model_sha256": sha, "device": "cpu", "batch_size": 4},
                        random_displacements=3, random_seed=1)
    job = maker.make(cu, material_id="Cu-mace", supercell_matrix=smat)
    responses = run_locally(job, store=store, log=False, ensure_success=True)
    doc = responses[job.uuid][1].output
    assert not doc.failed, doc.errors
    assert doc.engine.kind == "mlip" and doc.engine.model_sha256 == sha
    assert doc.enthalpy_per_atom_eV is None  # forces-only MLIP: no energy recorded by default

    calc = MACECalculator(model_paths=str(cu_mace_model), device="cpu", default_dtype="float64")
    ph = phonopy_with_calculator(cu, smat, calc, number_of_snapshots=3, random_seed=1)
    ph.produce_force_constants(fc_calculator="symfc", calculate_full_force_constants=False)
    fc = np.array(doc.force_constants.force_constants)
    np.testing.assert_allclose(fc, ph.force_constants, rtol=1e-6, atol=1e-8)
    from phonopy.phonon.grid import length2mesh
    from phonopy.physical_units import get_physical_units

    ph.run_mesh(length2mesh(75.0, ph.primitive.cell), is_gamma_center=True)
    ph.run_thermal_properties(temperatures=[300.0, 1000.0], cutoff_frequency=0.1)
    conv = 1000.0 / get_physical_units().EvTokJmol
    for i, key in enumerate(("300", "1000")):
        assert doc.thermal[key].A_vib_meV_per_atom == pytest.approx(ph.thermal_properties.free_energy[i] * conv,
                                                                     rel=1e-6)
        assert doc.thermal[key].S_J_per_K_mol == pytest.approx(ph.thermal_properties.entropy[i], rel=1e-6)


def test_mace_model_missing_from_the_store_gives_a_failed_doc(tmp_path, monkeypatch):
    monkeypatch.setenv("PHONON_FLOWS_MODEL_CACHE", str(tmp_path / "cache"))
    store = get_store(store_dir=tmp_path / "store")
    job = PhononMaker(engine="mace", engine_kwargs={"model_sha256": "ab" * 32, "device": "cpu"}).make(
        _cu(), material_id="Cu-nomodel", supercell_matrix=[2, 2, 2]
    )
    responses = run_locally(job, store=store, log=False, ensure_success=True)
    doc = responses[job.uuid][1].output
    assert doc.failed and "no MACE model" in doc.errors[0] and doc.engine.model_sha256 == "ab" * 32


# (the VASP path, VASP replaced as in atomate2's own tests, is in test_vasp_mock.py)


def test_overlapping_atoms_give_a_failed_doc():
    from pymatgen.core import Lattice, Structure

    from phonon_flows.makers.phonons import engine_phonons

    bad = Structure(Lattice.cubic(3.6), ["Cu", "Cu"], [[0, 0, 0], [0.01, 0, 0]])
    doc = engine_phonons.original(bad, "emt", {}, phonon_settings(), [3, 3, 3], "Cu-overlap")
    assert doc.failed and doc.errors[0].startswith("Cu-overlap") and "Å" in doc.errors[0]
