"""VASP through atomate2 as on a cluster, with VASP itself replaced as in atomate2's own tests
(``atomate2.utils.testing.vasp.monkeypatch_vasp``): the real RecipeStaticMaker / RecipeRelaxMaker
write their inputs, the mock checks them against reference inputs and drops the recorded outputs
of phonopy's examples, and atomate2 + emmet parse them into TaskDocs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from atomate2.utils.testing.vasp import monkeypatch_vasp
from jobflow import Flow, run_locally
from pymatgen.io.phonopy import get_pmg_structure

from _phonopy_reference import DFT, phonopy_load, reference_numbers
from _vasp_mock import DATA, RELAX_TAGS, STATIC_TAGS, reference_folder
from phonon_flows.makers.phonons import PhononMaker, phonons_from_forces, phonon_settings
from phonon_flows.makers.vasp import VaspForceMaker, VaspRelaxMaker
from phonon_flows.schemas.forces import ForceDoc, RelaxDoc
from phonon_flows.schemas.phonon import PhononDoc
from phonon_flows.store import get_store

pytestmark = pytest.mark.filterwarnings("ignore")
INCAR_STATIC = DATA / "vasp-mock" / "INCAR-static"
INCAR_RELAX = DATA / "vasp-mock" / "INCAR-relax"
POTCARS = {"Si": ["Si"], "NaCl": ["Na_pv", "Cl"]}


@pytest.fixture
def mock_vasp(monkeypatch, tmp_path):
    """atomate2's monkeypatch_vasp on reference folders under tmp_path/refs."""
    refs = tmp_path / "refs"
    refs.mkdir()
    yield from monkeypatch_vasp(monkeypatch, refs)


def _run(flow, tmp_path, store=None):
    store = store or get_store(store_dir=tmp_path / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_locally(flow, store=store, create_folders=True, root_dir=tmp_path / "runs", log=False)
    return store


def _output(store, uuid, cls):
    doc = store.query_one({"uuid": uuid}, load=True, sort={"index": -1})
    assert doc is not None, "the job left no output"
    return cls.model_validate(doc["output"])


def _phonon_refs(name, shared_data, tmp_path, material_id, incar=INCAR_STATIC, tags=STATIC_TAGS):
    """phonopy's own displaced supercells and recorded outputs as reference folders for the
    static jobs (named as PhononMaker + VaspForceMaker name them)."""
    folder = shared_data.joinpath(*DFT, name)
    ph = phonopy_load(folder, tmp_path)
    files = [folder / "vasprun.xml"] if name == "Si" else [folder / f"vasprun.xml-00{i}" for i in (1, 2)]
    supercells = ph.supercells_with_displacements
    assert len(files) == len(supercells)
    refs, kwargs = {}, {}
    for i, (f, sc) in enumerate(zip(files, supercells)):
        job_name = f"recipe static {material_id} {i + 1}/{len(files)}"
        reference_folder(tmp_path / "refs", f"{name}-{i}", f, get_pmg_structure(sc), incar, POTCARS[name])
        refs[job_name] = f"{name}-{i}"
        kwargs[job_name] = {"incar_settings": list(tags), "check_inputs": ["incar", "kpoints", "poscar", "potcar"]}
    return ph, refs, kwargs


def _assert_equals_phonopy(doc: PhononDoc, ph):
    assert not doc.failed, doc.errors
    ref = reference_numbers(ph)
    for key in ("300", "1000"):
        for field in ("A_vib_meV_per_atom", "Cv_J_per_K_mol", "S_J_per_K_mol"):
            assert getattr(doc.thermal[key], field) == pytest.approx(ref["thermal"][key][field], rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(np.array(doc.band_structure.frequencies), ref["band_frequencies"], rtol=1e-6,
                               atol=1e-6)


def test_si_phonons_through_atomate2_equal_phonopy(mock_vasp, shared_data, tmp_path):
    ph, refs, kwargs = _phonon_refs("Si", shared_data, tmp_path, "Si")
    mock_vasp(refs, kwargs)
    unit = get_pmg_structure(ph.unitcell)
    flow = PhononMaker(force_maker=VaspForceMaker()).make(unit, material_id="Si", supercell_matrix=ph.supercell_matrix)
    store = _run(flow, tmp_path)
    doc = _output(store, flow.output.uuid, PhononDoc)
    assert doc.engine.name == "vasp" and doc.engine.kind == "dft" and doc.engine.version == "4.6.35"
    # the INCAR VASP used, as emmet read it from the recorded vasprun.xml (phonopy's example: ENCUT 300)
    assert doc.engine.settings["incar"]["ENCUT"] == 300 and not doc.nac.applied
    _assert_equals_phonopy(doc, ph)


def test_nacl_with_born_charges_through_atomate2_equals_phonopy(mock_vasp, shared_data, tmp_path):
    from phonopy.file_IO import parse_BORN

    ph, refs, kwargs = _phonon_refs("NaCl", shared_data, tmp_path, "NaCl")
    mock_vasp(refs, kwargs)
    born = parse_BORN(ph.primitive, filename=shared_data.joinpath(*DFT, "NaCl", "BORN"))
    nac = {"born": np.asarray(born["born"]).tolist(), "dielectric": np.asarray(born["dielectric"]).tolist(),
           "factor": float(born["factor"]), "source": "BORN file"}
    flow = PhononMaker(force_maker=VaspForceMaker()).make(get_pmg_structure(ph.unitcell), material_id="NaCl",
                                                          supercell_matrix=ph.supercell_matrix, nac_params=nac)
    doc = _output(_run(flow, tmp_path), flow.output.uuid, PhononDoc)
    assert doc.nac.applied and doc.nac.source == "BORN file" and doc.n_displacements == 2
    _assert_equals_phonopy(doc, ph)  # phonopy.load with BORN


def test_wrong_inputs_are_caught_by_the_mock(mock_vasp, shared_data, tmp_path):
    """The mock really checks: a reference INCAR that asks ENCUT 600 fails the recipe's job."""
    changed = tmp_path / "INCAR-600"
    changed.write_text(INCAR_STATIC.read_text().replace("ENCUT = 520", "ENCUT = 600"))
    ph, refs, kwargs = _phonon_refs("Si", shared_data, tmp_path, "Si", incar=changed)
    mock_vasp(refs, kwargs)
    flow = PhononMaker(force_maker=VaspForceMaker()).make(get_pmg_structure(ph.unitcell), material_id="Si",
                                                          supercell_matrix=ph.supercell_matrix)
    doc = _output(_run(flow, tmp_path), flow.output.uuid, PhononDoc)
    assert doc.failed and "forces are missing" in " ".join(doc.errors)


def test_relax_chain_gives_a_relax_doc_with_steps_and_pressure(mock_vasp, shared_data, tmp_path):
    from pymatgen.io.vasp import Vasprun

    vasprun = shared_data.joinpath(*DFT, "Si", "vasprun.xml")
    vr = Vasprun(str(vasprun), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    start = vr.initial_structure
    incar = tmp_path / "INCAR-relax"
    incar.write_text(INCAR_RELAX.read_text() + "PSTRESS = 10\n")
    refs, kwargs = {}, {}
    for i in (1, 2):  # the second relaxation starts from the first's CONTCAR
        reference_folder(tmp_path / "refs", f"relax-{i}", vasprun, start if i == 1 else vr.final_structure, incar,
                         ["Si"], ibrion=2)
        refs[f"recipe relax {i} Si16"] = f"relax-{i}"
        kwargs[f"recipe relax {i} Si16"] = {"incar_settings": [*RELAX_TAGS, "PSTRESS"]}
    mock_vasp(refs, kwargs)
    maker = VaspRelaxMaker.with_settings(user_incar_settings={"PSTRESS": 10})
    flow = maker.make(start, material_id="Si16")
    doc = _output(_run(flow, tmp_path), flow.output.uuid, RelaxDoc)
    assert doc.engine.kind == "dft"
    assert doc.n_steps == 2 * len(vr.ionic_steps)
    assert doc.pressure == pytest.approx(1.0)  # PSTRESS 10 kB = 1 GPa
    n = len(doc.structure)
    assert doc.energy_per_atom == pytest.approx(vr.final_energy / n, abs=1e-6)
    pv = 1.0 / 160.21766208 * doc.structure.volume  # 1 GPa in eV/Å^3 times V
    assert doc.enthalpy_per_atom == pytest.approx((vr.final_energy + pv) / n, rel=1e-6)


def test_user_incar_settings_reach_the_written_incar(mock_vasp, shared_data, tmp_path):
    """engine_kwargs-style VASP options (here ENCUT 600) reach every VASP job's INCAR."""
    changed = tmp_path / "INCAR-600"
    changed.write_text(INCAR_STATIC.read_text().replace("ENCUT = 520", "ENCUT = 600"))
    ph, refs, kwargs = _phonon_refs("Si", shared_data, tmp_path, "Si", incar=changed)
    mock_vasp(refs, kwargs)
    force_maker = VaspForceMaker.with_settings(user_incar_settings={"ENCUT": 600})
    flow = PhononMaker(force_maker=force_maker).make(get_pmg_structure(ph.unitcell), material_id="Si",
                                                     supercell_matrix=ph.supercell_matrix)
    store = _run(flow, tmp_path)
    doc = _output(store, flow.output.uuid, PhononDoc)
    assert not doc.failed, doc.errors  # the mock accepted an INCAR with ENCUT 600 (and refuses 520, see above)
    assert len(list(store.query({"output.@class": "ForceDoc"}))) == 1


def test_displacement_count_mismatch_gives_a_failed_doc_not_an_index_error(shared_data, tmp_path):
    """Forces counted on another structure (a relaxation that lowered the symmetry): the collecting
    job says so in a failed document."""
    ph = phonopy_load(shared_data.joinpath(*DFT, "Si"), tmp_path)
    unit = get_pmg_structure(ph.unitcell)
    strained = unit.copy()
    strained.apply_strain([0.002, 0.0, 0.0])
    from phonon_flows.core import phonons as ph_core

    settings = phonon_settings()
    phonon = ph_core.make_phonopy(strained, ph.supercell_matrix)
    sc = [ph_core.to_structure(ph_core.to_phonopy_atoms(a)) for a in ph_core.generate_displacements(phonon, 0.01)]
    assert len(sc) == 4  # tetragonal now: 4 displacements where the cubic cell had 1
    forces = [np.zeros((len(sc[0]), 3))]  # the one force calculation counted on the cubic cell
    doc = phonons_from_forces.original(strained, sc, forces, settings, ph.supercell_matrix, None, "Si-strained")
    assert doc.failed and "4 displaced supercells but 1 force calculations" in doc.errors[0]


def test_campaign_vasp_options_reach_every_vasp_maker(tmp_path, monkeypatch):
    from phonon_flows.errors import InputError
    from phonon_flows.flows import TrainingCampaignMaker
    from phonon_flows.flows.training_data import TrainingDataMaker
    from phonon_flows.makers.vasp import RecipeStaticMaker

    camp = TrainingCampaignMaker(engine="vasp", engine_kwargs={"user_incar_settings": {"ENCUT": 600}},
                                 relax_kwargs={"user_incar_settings": {"PSTRESS": 5}, "n_relaxations": 1})
    static = camp.force_maker().static_maker.input_set_generator
    relax = camp.relax_maker()
    assert static.user_incar_settings == {"ENCUT": 600} and static.incar_updates["EDIFF"] == 1e-8  # recipe kept
    # the INCAR atomate2 writes for the campaign's single points
    from atomate2.vasp.files import write_vasp_input_set
    from pymatgen.io.vasp import Incar

    monkeypatch.chdir(tmp_path)
    si = get_pmg_structure(phonopy_load_si_unitcell())
    write_vasp_input_set(si, static, directory=tmp_path, potcar_spec=True)
    incar = Incar.from_file(tmp_path / "INCAR")
    assert incar["ENCUT"] == 600 and incar["EDIFF"] == pytest.approx(1e-8) and incar["KSPACING"] == 0.15
    assert relax.n_relaxations == 1
    assert relax.relax_maker.input_set_generator.user_incar_settings == {"ENCUT": 600, "PSTRESS": 5}
    custom = RecipeStaticMaker(name="my static", run_vasp_kwargs={"vasp_cmd": "srun vasp_std"})
    mine = TrainingCampaignMaker(engine="vasp", engine_kwargs={"static_maker": custom,
                                                               "user_incar_settings": {"NCORE": 4}}).force_maker()
    assert mine.static_maker.name == "my static" and mine.static_maker.run_vasp_kwargs["vasp_cmd"] == "srun vasp_std"
    assert mine.static_maker.input_set_generator.user_incar_settings == {"NCORE": 4}
    data = TrainingDataMaker.with_vasp(engine_kwargs={"user_incar_settings": {"ENCUT": 600}})
    assert data.relax_maker.relax_maker.input_set_generator.user_incar_settings == {"ENCUT": 600}
    assert data.force_maker.static_maker.input_set_generator.user_incar_settings == {"ENCUT": 600}
    with pytest.raises(InputError, match="encut"):
        TrainingCampaignMaker(engine="vasp", engine_kwargs={"encut": 600}).force_maker()
    with pytest.raises(InputError, match="bogus"):
        TrainingCampaignMaker(engine="vasp", relax_kwargs={"bogus": 1}).relax_maker()


def phonopy_load_si_unitcell():
    """Si's unit cell as phonopy reads it from the test data (POSCAR-unitcell)."""
    from phonopy.interface.calculator import read_crystal_structure

    return read_crystal_structure(str(DATA / "dft-phonons" / "Si" / "POSCAR-unitcell"), interface_mode="vasp")[0]


def _unconverged_vasprun(src, dst):
    """The recorded vasprun.xml with NELM set to the number of SCF steps it took: VASP stopped at
    NELM, the electronic loop did not converge (what pymatgen/emmet then read)."""
    from pymatgen.io.vasp import Vasprun

    vr = Vasprun(str(src), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    n = len(vr.ionic_steps[-1]["electronic_steps"])
    text = src.read_text()
    import re

    text, k = re.subn(r'(<i type="int" name="NELM">)\s*\d+(</i>)', rf"\g<1>{n:6d}\g<2>", text)
    assert k >= 1
    dst.write_text(text)
    assert not Vasprun(str(dst), parse_dos=False, parse_eigen=False, parse_potcar_file=False).converged_electronic
    return dst


def test_unconverged_scf_becomes_a_failed_phonon_doc_naming_the_cause(mock_vasp, shared_data, tmp_path):
    ph, refs, kwargs = _phonon_refs("Si", shared_data, tmp_path, "Si")
    out = tmp_path / "refs" / "Si-0" / "outputs" / "vasprun.xml"
    _unconverged_vasprun(shared_data.joinpath(*DFT, "Si", "vasprun.xml"), tmp_path / "unconverged.xml")
    out.write_text((tmp_path / "unconverged.xml").read_text())
    mock_vasp(refs, kwargs)
    flow = PhononMaker(force_maker=VaspForceMaker()).make(get_pmg_structure(ph.unitcell), material_id="Si",
                                                          supercell_matrix=ph.supercell_matrix)
    store = _run(flow, tmp_path)
    doc = _output(store, flow.output.uuid, PhononDoc)
    assert doc.failed
    text = " ".join(doc.errors)
    assert "forces are missing for displaced supercell(s) [1] of 1: #1: RuntimeError" in text
    assert "did not converge within the limit of electronic" in text and "/runs/job_" in text  # cause, folder


def test_born_charges_by_dfpt_reach_the_vasp_reference_phonons(mock_vasp, shared_data, tmp_path):
    """The static VASP reference flow with RecipeBornMaker: a DFPT (LEPSILON) run on the unit cell,
    Born charges symmetrized onto the primitive cell, phonons with NAC equal to phonopy's with
    the same charges (BORN), and the PhononDoc says NAC came from DFPT."""
    from phonopy.physical_units import get_calculator_physical_units

    from _vasp_mock import lepsilon_outcar_lines, vasprun_with_epsilon
    from phonon_flows.flows.phonons import vasp_phonons
    from phonon_flows.makers.vasp import RecipeBornMaker

    folder = shared_data.joinpath(*DFT, "NaCl")
    ph = phonopy_load(folder, tmp_path)  # with BORN
    unit = get_pmg_structure(ph.unitcell)
    # the DFPT run's OUTCAR: BORN's charges on every atom of the 8-atom cell
    z = {"Na": np.asarray(ph.nac_params["born"][0]), "Cl": np.asarray(ph.nac_params["born"][1])}
    born_cell = [z[site.specie.symbol] for site in unit]
    extra = lepsilon_outcar_lines(born_cell, ph.nac_params["dielectric"])
    vasprun = vasprun_with_epsilon(folder / "vasprun.xml-001", tmp_path / "vasprun-dfpt.xml", ph.nac_params["dielectric"])
    reference_folder(tmp_path / "refs", "born", vasprun, unit, DATA / "vasp-mock" / "INCAR-born",
                     POTCARS["NaCl"], outcar_extra=extra)
    refs = {"recipe born NaCl": "born"}
    kwargs = {"recipe born NaCl": {"incar_settings": ["ENCUT", "EDIFF", "KSPACING", "GGA", "LEPSILON", "LPEAD",
                                                      "IBRION", "NSW"]}}
    for i, sc in enumerate(ph.supercells_with_displacements):
        name = f"recipe static NaCl #{i}"
        reference_folder(tmp_path / "refs", f"NaCl-{i}", folder / f"vasprun.xml-00{i + 1}", get_pmg_structure(sc),
                         INCAR_STATIC, POTCARS["NaCl"])
        refs[name] = f"NaCl-{i}"
        kwargs[name] = {"incar_settings": list(STATIC_TAGS)}
    mock_vasp(refs, kwargs)
    settings = phonon_settings()
    flow = vasp_phonons(VaspForceMaker(), unit, "NaCl", ph.supercell_matrix.tolist(), None, settings, unit,
                        born_maker=RecipeBornMaker())
    doc = _output(_run(flow, tmp_path), flow.output.uuid, PhononDoc)
    assert doc.nac.applied and doc.nac.source == "DFPT (LEPSILON)"
    # what phonopy-vasp-born makes of the unit cell's charges: site symmetry and charge neutrality
    from phonopy.structure.symmetry import symmetrize_borns_and_epsilon

    borns, eps = symmetrize_borns_and_epsilon(np.asarray(born_cell), np.asarray(ph.nac_params["dielectric"]),
                                              ph.unitcell, primitive_matrix=ph.primitive_matrix,
                                              supercell_matrix=ph.supercell_matrix)
    np.testing.assert_allclose(doc.nac.born, borns, atol=1e-9)
    assert np.abs(np.sum(doc.nac.born, axis=0)).max() < 1e-9  # neutral
    ph.nac_params = {"born": borns, "dielectric": eps, "factor": get_calculator_physical_units("vasp").nac_factor}
    _assert_equals_phonopy(doc, ph)


def _custodian_run(monkeypatch, shared_data, tmp_path, vasprun_file):
    """Si phonons where the real atomate2 run_vasp starts custodian, which runs tests/fake_vasp.py as
    the VASP executable (recorded outputs copied in); input sets write POTCAR.spec, as in
    atomate2's mock."""
    import sys
    from pathlib import Path

    from atomate2.vasp.sets.base import VaspInputGenerator
    from pymatgen.io.vasp import Vasprun
    from pymatgen.io.vasp.sets import VaspInputSet

    from _vasp_mock import oszicar_text

    get_input_set = VaspInputGenerator.get_input_set
    monkeypatch.setattr(VaspInputSet, "get_input_set",
                        lambda self, *a, **k: get_input_set(self, *a, **{**k, "potcar_spec": True}))
    monkeypatch.setattr(VaspInputSet, "nelect", lambda *a, **k: 8)
    folder = shared_data.joinpath(*DFT, "Si")
    ph = phonopy_load(folder, tmp_path)
    ref = reference_folder(tmp_path / "refs", "Si", vasprun_file, get_pmg_structure(ph.supercells_with_displacements[0]),
                           INCAR_STATIC, POTCARS["Si"])
    vr = Vasprun(str(vasprun_file), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    (ref / "outputs" / "OSZICAR").write_text(oszicar_text(vr))
    monkeypatch.setenv("FAKE_VASP_OUTPUTS", str(ref / "outputs"))
    fake = f"{sys.executable} {Path(__file__).resolve().parent / 'fake_vasp.py'}"
    force_maker = VaspForceMaker.with_settings(run_vasp_kwargs={
        "vasp_cmd": fake, "max_errors": 2, "custodian_kwargs": {"polling_time_step": 0.2, "monitor_freq": 1}})
    flow = PhononMaker(force_maker=force_maker).make(get_pmg_structure(ph.unitcell), material_id="Si",
                                                     supercell_matrix=ph.supercell_matrix)
    return ph, _output(_run(flow, tmp_path), flow.output.uuid, PhononDoc)


def test_custodian_success_path(monkeypatch, shared_data, tmp_path):
    ph, doc = _custodian_run(monkeypatch, shared_data, tmp_path, shared_data.joinpath(*DFT, "Si", "vasprun.xml"))
    _assert_equals_phonopy(doc, ph)


def test_custodian_gives_up_on_an_unconverged_scf_and_the_doc_names_why(monkeypatch, shared_data, tmp_path):
    bad = _unconverged_vasprun(shared_data.joinpath(*DFT, "Si", "vasprun.xml"), tmp_path / "vasprun-unconverged.xml")
    _, doc = _custodian_run(monkeypatch, shared_data, tmp_path, bad)
    text = " ".join(doc.errors)
    assert doc.failed and "forces are missing for displaced supercell(s) [1] of 1" in text
    assert "custodian found:" in text, text


def test_training_data_with_vasp_gives_the_extxyz(mock_vasp, shared_data, tmp_path):
    """TrainingDataMaker.with_vasp: perturbed supercells -> one atomate2 static each -> the training
    set's extxyz with VASP's energies and forces (the recorded outputs stand in for the runs, so
    POSCAR, randomly perturbed, is not compared)."""
    from ase.io import read
    from pymatgen.io.vasp import Vasprun

    from phonon_flows.flows.training_data import TrainingDataMaker
    from phonon_flows.makers.perturb import PerturbationMaker
    from phonon_flows.schemas.training_set import TrainingSetDoc

    vasprun = shared_data.joinpath(*DFT, "Si", "vasprun.xml")
    vr = Vasprun(str(vasprun), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    ph = phonopy_load(shared_data.joinpath(*DFT, "Si"), tmp_path)
    reference_folder(tmp_path / "refs", "Si", vasprun, vr.final_structure, INCAR_STATIC, POTCARS["Si"])
    names = [f"recipe static Si #{i}" for i in range(2)]
    mock_vasp({n: "Si" for n in names},
              {n: {"incar_settings": list(STATIC_TAGS), "check_inputs": ["incar", "kpoints", "potcar"]} for n in names})
    perturb = PerturbationMaker(n_structures=2, supercell_matrix=[[2, 0, 0], [0, 2, 0], [0, 0, 2]])
    maker = TrainingDataMaker.with_vasp(relax=False, perturbation_maker=perturb)
    flow = maker.make({"Si": get_pmg_structure(ph.primitive)})
    doc = _output(_run(flow, tmp_path), flow.output.uuid, TrainingSetDoc)
    assert doc.material_ids == ["Si"] and doc.n_structures == 2 and not doc.failed
    assert len(doc.engines) == 1 and doc.engines[0].name == "vasp"
    import io

    atoms = read(io.StringIO(doc.xyz), index=":", format="extxyz")
    assert len(atoms) == 2 and all(len(a) == 16 for a in atoms)
    np.testing.assert_allclose(atoms[0].arrays["REF_forces"], vr.ionic_steps[-1]["forces"], atol=1e-8)
    assert atoms[1].info["REF_energy"] == pytest.approx(vr.final_energy)
