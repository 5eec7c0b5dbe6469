"""VASP makers: the inputs atomate2 writes with the recipe's settings, and parsing real VASP
outputs (phonopy's example vasprun.xml files) into ForceDocs."""

from __future__ import annotations

import numpy as np
import phonopy
import pytest
from ase.stress import full_3x3_to_voigt_6_stress
from atomate2.vasp.files import write_vasp_input_set
from jobflow import Flow, run_locally
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Incar

from phonon_flows.engines.vasp import (
    ENCUT,
    force_doc_from_vasprun,
    kbar_to_ase_stress,
    read_vasprun,
)
from phonon_flows.errors import InputError
from phonon_flows.makers.vasp import (
    RecipeRelaxMaker,
    RecipeStaticMaker,
    VaspForceMaker,
    VaspRelaxMaker,
    vasp_force_doc,
)
from phonon_flows.store import get_store


def nacl() -> Structure:
    h = 5.69 / 2
    return Structure(Lattice([[0, h, h], [h, 0, h], [h, h, 0]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def common_incar_checks(incar: Incar) -> None:
    assert incar["ENCUT"] == ENCUT == 520
    assert incar["EDIFF"] == pytest.approx(1e-8)
    assert incar["KSPACING"] == pytest.approx(0.15)
    assert incar["KGAMMA"] is True
    assert incar["GGA"].upper() == "PE"  # PBE (atomate2's base is PBEsol)
    assert incar["PREC"] == "Accurate" and incar["LREAL"] is False
    assert incar["ISMEAR"] == 0 and incar["SIGMA"] == pytest.approx(0.05)
    assert incar["LDAU"] is False
    assert "METAGGA" not in incar and "LMIXTAU" not in incar
    assert incar["LWAVE"] is False and incar["LCHARG"] is False


# --- inputs written ----------------------------------------------------------------------------
def test_static_inputs_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_vasp_input_set(nacl(), RecipeStaticMaker().input_set_generator, directory=tmp_path, potcar_spec=True)
    incar = Incar.from_file(tmp_path / "INCAR")
    common_incar_checks(incar)
    assert incar["NSW"] == 0 and incar["ISYM"] == 0
    assert "IBRION" not in incar or incar["IBRION"] == -1
    assert not (tmp_path / "KPOINTS").exists()  # KSPACING decides the mesh
    assert (tmp_path / "POTCAR.spec").read_text().split() == ["Na_pv", "Cl"]  # PBE PAW
    assert not (tmp_path / "POTCAR").exists()


def test_relax_inputs(tmp_path):
    vis = RecipeRelaxMaker().input_set_generator.get_input_set(nacl(), potcar_spec=True)
    incar = vis["INCAR"]
    common_incar_checks(incar)
    assert incar["EDIFFG"] == pytest.approx(-1e-3)  # forces below 1e-3 eV/Å
    assert incar["IBRION"] == 2 and incar["ISIF"] == 3 and incar["NSW"] >= 99
    assert vis["KPOINTS"] is None
    assert RecipeRelaxMaker().input_set_generator.user_potcar_functional == "PBE_54"


def test_user_settings_still_win():
    maker = RecipeStaticMaker()
    maker.input_set_generator.user_incar_settings = {"ENCUT": 600, "NCORE": 4}
    incar = maker.input_set_generator.get_input_set(nacl(), potcar_spec=True)["INCAR"]
    assert incar["ENCUT"] == 600 and incar["NCORE"] == 4 and incar["EDIFF"] == pytest.approx(1e-8)


def test_static_job_writes_recipe_inputs_before_running_vasp(tmp_path, monkeypatch):
    """The atomate2 job of VaspForceMaker writes the recipe's inputs, then calls run_vasp
    (custodian); here run_vasp is replaced by a stub since there is no VASP."""
    import atomate2.vasp.jobs.base as vasp_base

    calls = []

    def no_vasp(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("no VASP on this machine")

    monkeypatch.setattr(vasp_base, "run_vasp", no_vasp)
    maker = VaspForceMaker()
    maker.static_maker.write_input_set_kwargs["potcar_spec"] = True
    flow = maker.make(nacl(), material_id="NaCl-v", perturbation_index=3)
    assert isinstance(flow, Flow) and len(flow.jobs) == 2
    static, convert = flow.jobs
    assert "NaCl-v #3" in static.name and flow.output.uuid == convert.uuid
    monkeypatch.chdir(tmp_path)
    # a VASP run that raises becomes a FailedCalculation naming the cause (not a failed job)
    out = static.run(get_store(store_dir=tmp_path / "store", connect=True)).output
    assert out.failed and "RuntimeError: no VASP on this machine" in out.reason and out.dir_name == str(tmp_path)
    assert len(calls) == 1
    incar = Incar.from_file(tmp_path / "INCAR")
    common_incar_checks(incar)
    assert incar["NSW"] == 0 and incar["ISYM"] == 0


def test_relax_maker_builds_two_relaxations_and_a_document():
    flow = VaspRelaxMaker().make(nacl(), material_id="NaCl-r")
    names = [j.name for j in flow.jobs]
    assert len(flow.jobs) == 3 and names[0].startswith("recipe relax 1") and names[1].startswith("recipe relax 2")
    # the second relaxation starts from the first one's structure and directory
    second = flow.jobs[1]
    refs = second.input_references
    assert {r.uuid for r in refs} == {flow.jobs[0].uuid}
    assert flow.output.uuid == flow.jobs[2].uuid


# --- parsing real outputs -----------------------------------------------------------------------
def test_nacl_vasprun_forces_match_phonopy_force_sets(shared_data):
    root = shared_data / "dft-phonons" / "NaCl"
    ph = phonopy.load(root / "phonopy_disp.yaml", force_sets_filename=root / "FORCE_SETS", produce_fc=False, log_level=0)
    for i in (1, 2):
        doc = force_doc_from_vasprun(root / f"vasprun.xml-00{i}", material_id="NaCl", perturbation_index=i - 1)
        entry = ph.dataset["first_atoms"][i - 1]
        assert doc.n_atoms == 64 and doc.structure.composition.formula == "Na32 Cl32"
        np.testing.assert_allclose(np.array(doc.forces), np.array(entry["forces"]), atol=1e-8)
        # the structure is phonopy's supercell with the one displaced atom
        disp = doc.structure.cart_coords - ph.supercell.positions
        moved = np.flatnonzero(np.linalg.norm(disp, axis=1) > 1e-6)
        assert moved.tolist() == [entry["number"]]
        np.testing.assert_allclose(disp[moved[0]], entry["displacement"], atol=1e-6)
        assert doc.engine.name == "vasp" and doc.engine.kind == "dft" and doc.engine.version == "4.6.35"
        assert doc.engine.settings["incar"]["EDIFF"] == pytest.approx(1e-8)
        assert doc.energy_per_atom == pytest.approx(doc.energy / 64)
        if i == 1:  # energy(sigma->0) of the last ionic step, as written in the file
            assert doc.energy == pytest.approx(-216.82820693, abs=1e-8)


def test_si_vasprun_against_ases_reader(shared_data):
    import ase.io

    path = shared_data / "dft-phonons" / "Si" / "vasprun.xml"
    doc = force_doc_from_vasprun(path, material_id="Si")
    atoms = ase.io.read(path, format="vasp-xml", index=-1)
    assert doc.n_atoms == len(atoms) == 16
    np.testing.assert_allclose(np.array(doc.forces), atoms.get_forces(), atol=1e-8)
    assert doc.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    # stress: ASE's sign and units (eV/Å^3)
    np.testing.assert_allclose(full_3x3_to_voigt_6_stress(np.array(doc.stress)), atoms.get_stress(), atol=1e-8)
    # forces of a displaced-atom supercell add up to ~0 (translational invariance)
    assert np.abs(np.array(doc.forces).sum(axis=0)).max() < 1e-3
    assert doc.engine.settings["potcar_symbols"] == ["PAW_PBE Si 05Jan2001"]


def test_kbar_conversion_sign():
    # VASP: positive = compressive (the cell wants to expand); ASE: negative
    s = kbar_to_ase_stress(np.eye(3) * 10.0)  # 10 kB = 1 GPa
    assert s[0, 0] == pytest.approx(-1.0 / 160.21766208, rel=1e-6)


def test_conversion_job_from_task_outputs(shared_data, tmp_path):
    """The thin job that follows atomate2's static job, fed what TaskDoc.output holds."""
    path = shared_data / "dft-phonons" / "NaCl" / "vasprun.xml-001"
    vr = read_vasprun(path)
    step = vr.ionic_steps[-1]
    task = {"output": {"structure": step["structure"], "energy": vr.final_energy, "forces": step["forces"],
                       "stress": step["stress"]},
            "dir_name": "somehost:/calc/dir", "vasp_version": vr.vasp_version, "input": {"incar": dict(vr.incar)}}
    job = vasp_force_doc(task, "NaCl", 0)
    store = get_store(store_dir=tmp_path / "store")
    out = run_locally(job, store=store, root_dir=tmp_path, log=False, ensure_success=True)[job.uuid][1].output
    ref = force_doc_from_vasprun(path, "NaCl", 0)
    np.testing.assert_allclose(out.forces, ref.forces)
    np.testing.assert_allclose(out.stress, ref.stress)
    assert out.energy == pytest.approx(ref.energy) and out.engine.kind == "dft"
    assert out.dir_name == "somehost:/calc/dir"


def test_unparsable_vasprun_names_the_file(tmp_path):
    bad = tmp_path / "vasprun.xml"
    bad.write_text("<modeling><generator>")
    with pytest.raises(InputError, match="cannot parse") as err:
        force_doc_from_vasprun(bad, material_id="X-1")
    assert err.value.material_id == "X-1"
