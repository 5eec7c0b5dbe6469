"""Reliability: bad inputs are refused one line each before any job runs and the good ones go on;
failures inside jobs (NaN forces, a VASP run custodian cannot fix) are recorded with their reason
and directory while the rest of the campaign completes; ``phonon-flows status`` lists them.

Elsewhere: the out-of-memory retry with a halved batch (tests/test_mace_engine.py), a diverging
training (tests/test_training.py), kill -9 and resume (tests/test_resume.py), concurrent FireWorks
workers (tests/test_fireworks.py), fuzzed readers and command lines (tests/test_fuzz.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from jobflow import Flow
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter
from typer.testing import CliRunner

from phonon_flows.cli import app
from phonon_flows.engines.reference import EmtEngine
from phonon_flows.flows import TrainingCampaignMaker
from phonon_flows.makers.benchmark import BenchmarkMaker
from phonon_flows.results import PhononResults
from phonon_flows.runner import campaign_status, failure_records, run_campaign
from phonon_flows.store import get_store, tag_metadata
from phonon_flows.validation import check_inputs, find_duplicates, problem_lines, vasp_elements

R_GAS = 8.314462618  # J/(K mol)


def _s(*args, **kwargs) -> Structure:
    return AseAtomsAdaptor.get_structure(bulk(*args, **kwargs))


def _cif(path: Path, structure: Structure) -> Path:
    CifWriter(structure).write_file(path)
    return path


def _disordered_cuau() -> Structure:
    fcc = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure(Lattice.cubic(3.75), [{"Cu": 0.5, "Au": 0.5}] * 4, fcc)


# -- input checks ---------------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    d = tmp_path / "inputs"
    d.mkdir()
    files = {
        "Cu": _cif(d / "Cu.cif", _s("Cu", "fcc", a=3.61)),
        "Al": d / "POSCAR_Al",
        "empty": d / "empty.cif",
        "junk": d / "junk.cif",
        "not-a-crystal": d / "not-a-crystal.json",
        "molecule": d / "molecule.xyz",
        "CuAu": _cif(d / "CuAu.cif", _disordered_cuau()),
        "overlap": d / "overlap.json",
        "NaCl": _cif(d / "NaCl.cif", Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
        "big": d / "big.json",
        "Cu-conventional": _cif(d / "Cu-conventional.cif", _s("Cu", "fcc", a=3.61, cubic=True)),
    }
    _s("Al", "fcc", a=4.05).to(filename=str(files["Al"]), fmt="poscar")
    files["empty"].write_text("")
    files["junk"].write_text("data_junk\n_cell_length_a 3.6\n")
    files["not-a-crystal"].write_text('{"hello": [1, 2, 3]}')
    files["molecule"].write_text("2\nH2, no cell\nH 0 0 0\nH 0 0 0.74\n")
    Structure(Lattice.cubic(3.6), ["Cu", "Cu"], [[0, 0, 0], [0.05, 0, 0]]).to(filename=str(files["overlap"]))
    big = _s("Cu", "fcc", a=3.61, cubic=True) * (4, 4, 4)  # 256 atoms, one of them Au: no smaller cell
    big.replace(0, "Au")
    big.to(filename=str(files["big"]))
    return files


def test_each_bad_input_gets_one_line_and_the_good_ones_go_on(inputs):
    good, problems = check_inputs(list(inputs.values()), engine="emt")
    assert [mid for mid, _ in good] == ["Cu", "POSCAR_Al"]
    assert all(isinstance(s, Structure) for _, s in good)
    lines = problem_lines(problems)
    assert len(lines) == len(inputs) - 2 and all("\n" not in line for line in lines)
    by_name = {p.material_id: p for p in problems}
    expected = {
        "empty": "is empty",
        "junk": "cannot read a crystal structure",
        "not-a-crystal": "cannot read a crystal structure",
        "molecule": "not a periodic 3D structure",
        "CuAu": "disordered or partially occupied",
        "overlap": "overlapping atoms: sites 0 (Cu) and 1 (Cu) are 0.180 Å apart",
        "NaCl": "engine emt has no parameters for element(s) Cl, Na",
        "big": "the primitive cell alone has 256 atoms, above the supercell limit of 200 atoms",
        "Cu-conventional": "duplicate of Cu",
    }
    assert set(by_name) == set(expected)
    for name, reason in expected.items():
        assert reason in by_name[name].reason, (name, by_name[name].reason)
        assert by_name[name].stage == "input"
        line = by_name[name].line()
        assert str(inputs[name]) in line, line  # the line names the file
    assert str(inputs["Cu"]) in by_name["Cu-conventional"].reason  # ... and the one it duplicates


def test_engine_elements_and_supercell_limit():
    cu, al = _s("Cu", "fcc", a=3.61), _s("Al", "fcc", a=4.05)
    es = Structure(Lattice.cubic(4.0), ["Es"], [[0, 0, 0]])
    # VASP: elements without a POTCAR in the recipe's PBE set
    assert "Es" not in vasp_elements() and {"Cu", "Al", "Na", "Cl", "O"} <= vasp_elements()
    good, problems = check_inputs({"Cu": cu, "Es": es}, engine="vasp")
    assert [m for m, _ in good] == ["Cu"] and "engine vasp has no parameters for element(s) Es" in problems[0].reason
    doc = TrainingCampaignMaker(name="vasp-elements", engine="vasp", relax=False, min_atoms=8, max_atoms=40).make(
        {"Cu": cu, "Es": es}).jobs[0].function_args[0]  # the campaign makers check the same
    assert [(e.material_id, e.reason) for e in doc.input_failures] == [
        ("Es", "engine vasp has no parameters for element(s) Es")]
    # a trained model knows only its training elements
    good, problems = check_inputs({"Cu": cu, "Al": al}, engine="mace", model_elements=["Cu"])
    assert [m for m, _ in good] == ["Cu"] and problems[0].line() == "Al: engine mace has no parameters for element(s) Al"
    # a one-atom primitive cell gets 4x4x4 = 64 atoms: above a 50-atom limit
    good, problems = check_inputs({"Cu": cu}, max_supercell_atoms=50)
    assert not good and problems[0].reason == "its phonon supercell has 64 atoms, above the limit of 50 atoms"
    # no supercell of a 5-atom cell in 8..9 atoms
    perovskite = Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"],
                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    good, problems = check_inputs({"SrTiO3": perovskite}, min_atoms=8, max_atoms=9)
    assert not good and "no supercell of this 5-atom cell has between 8 and 9 atoms" in problems[0].reason
    with pytest.raises(Exception, match="unknown engine"):
        check_inputs({"Cu": cu}, engine="dft-please")


def test_items_that_are_not_structures():
    good, problems = check_inputs([None, 42, {"lattice": 1}, _s("Cu", "fcc", a=3.61)])
    assert len(good) == 1 and good[0][0].startswith("Cu-")
    assert [p.line() for p in problems] == [
        "input #1: expected a structure file or a pymatgen Structure, got NoneType",
        "input #2: expected a structure file or a pymatgen Structure, got int",
        "input #3: expected a structure file or a pymatgen Structure, got dict",
    ]


def test_duplicates_by_matcher_and_in_campaign_flows():
    cu = _s("Cu", "fcc", a=3.61)
    shaken = cu.copy()
    shaken.translate_sites([0], [0.003, 0, 0], frac_coords=False)  # not the same hash, the same crystal
    hcp = _s("Cu", "hcp", a=2.56, c=4.18)
    assert find_duplicates([("a", cu), ("b", hcp), ("c", shaken), ("d", _s("Cu", "fcc", a=3.61, cubic=True))]) == {
        "c": "a", "d": "a"}
    # a campaign given the same crystal twice computes it once (before: two jobs with one uuid)
    maker = TrainingCampaignMaker(name="dups", engine="emt", n_perturbations=2, min_atoms=8, max_atoms=40,
                                  preset="small", holdout=("Cu-fcc",))
    mats = {"Cu-hcp": hcp, "Cu-hcp-again": hcp.copy(), "Cu-fcc": cu, "Cu-fcc-conv": _s("Cu", "fcc", a=3.61, cubic=True)}
    flow = maker.make(mats)
    doc = flow.jobs[0].function_args[0]
    assert {e.material_id: e.reason.split(":")[0] for e in doc.input_failures} == {
        "Cu-hcp-again": "duplicate of Cu-hcp", "Cu-fcc-conv": "duplicate of Cu-fcc"}
    assert doc.training_material_ids == ["Cu-hcp"] and doc.holdout_material_ids == ["Cu-fcc"]
    uuids = [j.uuid for j in flow.jobs]
    assert len(uuids) == len(set(uuids))


# -- a campaign of 5 materials: 2 bad inputs, 1 labelling fails -------------------------------------


@pytest.mark.slow
def test_campaign_of_five_with_three_failures_completes_the_others(tmp_path, monkeypatch):
    """Inputs: Cu hcp and Au fcc (training), Cu fcc (held out), a broken CIF and a disordered CuAu.
    EMT returns NaN forces for anything with Au, so Au's labelling fails; the training set is made
    of Cu hcp alone, the model is trained, the held-out Cu fcc gets its phonons with EMT and MACE
    and the benchmark runs. The 3 failures are in the store and in ``phonon-flows status``."""
    compute = EmtEngine._compute

    def nan_for_gold(self, atoms_list):
        results = compute(self, atoms_list)
        for atoms, res in zip(atoms_list, results, strict=True):
            if "Au" in atoms.get_chemical_symbols():
                res.forces = np.full_like(res.forces, np.nan)
        return results

    monkeypatch.setattr(EmtEngine, "_compute", nan_for_gold)
    d = tmp_path / "inputs"
    d.mkdir()
    files = [
        _cif(d / "Cu-hcp.cif", _s("Cu", "hcp", a=2.56, c=4.18)),
        _cif(d / "Au-fcc.cif", _s("Au", "fcc", a=4.08)),
        _cif(d / "Cu-fcc.cif", _s("Cu", "fcc", a=3.61)),
        d / "broken.cif",
        _cif(d / "CuAu-disordered.cif", _disordered_cuau()),
    ]
    files[3].write_text("data_broken\n_cell_length_a 3.6\n")
    maker = TrainingCampaignMaker(
        name="five", engine="emt", n_perturbations=3, min_atoms=8, max_atoms=40, relax_kwargs={"fmax": 0.01},
        preset="small", hyperparameters={"max_num_epochs": 2, "start_swa": 1},
        training_kwargs={"num_threads": 1, "device": "cpu"}, mlip_engine_kwargs={"device": "cpu"},
        benchmark_maker=BenchmarkMaker(write_figures=False),
    )
    flow = maker.make(files, holdout=["Cu-fcc"])
    doc = flow.jobs[0].function_args[0]
    refused = {e.material_id: e.reason for e in doc.input_failures}
    assert set(refused) == {"broken", "CuAu-disordered"}
    assert "broken.cif" in refused["broken"] and "disordered" in refused["CuAu-disordered"]
    assert doc.training_material_ids == ["Cu-hcp", "Au-fcc"] and doc.holdout_material_ids == ["Cu-fcc"]

    store = get_store(store_dir=tmp_path / "store")
    summary = run_campaign(flow, store, progress=False, work_dir=tmp_path / "runs")
    assert summary.counts == {"done": len(flow.jobs) - 1, "reused": 0, "failed": 1, "skipped": 0}, summary.render()
    (failure,) = summary.failures
    assert failure.material_id == "Au-fcc" and failure.stage == "label"
    assert "NaN or infinite forces" in failure.reason and "CalculationError" in failure.reason
    assert Path(failure.directory).is_dir() and "NaN" in (Path(failure.directory) / "job.log").read_text()

    # the store: the failure record, the training set without Au, phonons and benchmark of Cu fcc
    (record,) = failure_records(store, campaign="five")
    assert record["material_id"] == "Au-fcc" and record["stage"] == "label" and record["directory"] == failure.directory
    store.connect()
    ts = store.query_one({"metadata.phonon_flows.campaign": "five", "metadata.phonon_flows.stage": "training-set"})
    assert ts["output"]["material_ids"] == ["Cu-hcp"] and ts["output"]["n_structures"] == 3
    assert [(f["material_id"], f["stage"]) for f in ts["output"]["failed"]] == [("Au-fcc", "label")]
    found = {d["engine"]["name"]: d for d in PhononResults(store).find(campaign="five")}
    assert set(found) == {"emt", "mace"} and all(d["material_id"] == "Cu-fcc" for d in found.values())
    assert found["emt"]["thermal"]["T1000"]["Cv_J_per_K_mol"] == pytest.approx(3 * R_GAS, rel=0.01)
    bench = store.query_one({"metadata.phonon_flows.campaign": "five", "metadata.phonon_flows.stage": "benchmark"})
    assert bench["output"]["material_ids"] == ["Cu-fcc"]

    (status,) = campaign_status(store, "five")
    assert status.counts == {"done": len(flow.jobs) - 1, "failed": 1, "skipped": 0, "running": 0, "pending": 0}
    assert len(status.failures) + len(status.input_failures) == 3
    result = CliRunner().invoke(app, ["status", "five", "--store-dir", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "refused input broken: cannot read a crystal structure" in text
    assert "refused input CuAu-disordered: disordered or partially occupied" in text
    assert "failed Au-fcc (label): CalculationError: Au-fcc: label: structure 0 from emt: NaN or infinite forces" in text
    assert Path(failure.directory).name in text

    # a rerun retries only the failed labelling; it fails again, so nothing after it is redone
    again = run_campaign(maker.make(files, holdout=["Cu-fcc"]), store, progress=False, work_dir=tmp_path / "runs")
    assert again.count("failed") == 1 and again.count("skipped") == 0
    assert again.counts == {"done": 0, "reused": len(flow.jobs) - 1, "failed": 1, "skipped": 0}, again.render()
    assert store.docs_store.count({"uuid": {"$in": [j.uuid for j in flow.jobs]}}) == len(flow.jobs) - 1


# -- a VASP run custodian cannot fix ----------------------------------------------------------------

FAKE_VASP = """\
import sys
# a VASP that always dies with the same error, whatever custodian changes in INCAR
with open("vasp.out", "w") as out:
    out.write(" running on 1 total cores\\n ZBRENT: fatal error in bracketing\\n"
              "     please rerun with smaller EDIFF, or copy CONTCAR\\n     to POSCAR and continue\\n")
"""


def test_vasp_run_custodian_cannot_fix_is_recorded_and_the_rest_goes_on(tmp_path, monkeypatch):
    """atomate2's real VASP job and custodian, with a fake ``vasp`` that always hits ZBRENT:
    custodian's VaspErrorHandler corrects it, gives up (NonRecoverableError); the NaCl labelling
    is recorded as failed with its directory (inputs, custodian.json, error archives) and its
    FailedCalculation carries custodian's reason to the training set; the Cu labelling (EMT) and
    the training set still run."""
    from phonon_flows.makers import ReferenceForceMaker, VaspForceMaker
    from phonon_flows.makers.training_set import TrainingSetMaker

    fake = tmp_path / "fake_vasp.py"
    fake.write_text(FAKE_VASP)
    vasp = VaspForceMaker()
    vasp.static_maker.write_input_set_kwargs["potcar_spec"] = True  # no POTCARs on this machine
    vasp.static_maker.run_vasp_kwargs = {
        "vasp_cmd": f"{sys.executable} {fake}", "max_errors": 3, "custodian_kwargs": {"polling_time_step": 0.1},
    }
    nacl = Structure(Lattice.cubic(5.69), ["Na", "Cl"] * 4,
                     [[0, 0, 0], [.5, 0, 0], [0, .5, 0], [.5, .5, 0], [0, 0, .5], [.5, 0, .5], [0, .5, .5], [.5, .5, .5]])
    vasp_label = tag_metadata(vasp.make(nacl, material_id="NaCl", perturbation_index=0), campaign="vasp-fail",
                              material_id="NaCl", stage="label")
    cu = _s("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    emt_label = tag_metadata(ReferenceForceMaker(engine="emt").make([cu], material_id="Cu"), campaign="vasp-fail",
                             material_id="Cu", stage="label")
    collect = tag_metadata(TrainingSetMaker().make([vasp_label.output, emt_label.output], ["NaCl", "Cu"]),
                           campaign="vasp-fail", stage="training-set")
    flow = Flow([vasp_label, emt_label, collect], name="vasp-fail")

    store = get_store(store_dir=tmp_path / "store")
    summary = run_campaign(flow, store, progress=False, work_dir=tmp_path / "runs")
    states = {(o.material_id, o.stage, o.state) for o in summary.outcomes}
    # the VASP job ends in a FailedCalculation document (failed, with custodian's reason); the
    # runner skips its ForceDoc job
    assert states == {("NaCl", "label", "failed"), ("NaCl", "label", "skipped"), ("Cu", "label", "done"),
                      (None, "training-set", "done")}, summary.render()
    failed = next(o for o in summary.outcomes if o.state == "failed")
    assert failed.reason.startswith("NonRecoverableError: Unrecoverable error for handler")
    assert "VaspErrorHandler" in failed.reason and "custodian found: zbrent" in failed.reason
    folder = Path(failed.directory)
    assert (folder / "INCAR").is_file() and (folder / "custodian.json").is_file()
    assert len(list(folder.glob("error.*.tar.gz"))) >= 1  # custodian tried corrections first
    store.connect()
    static = store.get_output(vasp_label.jobs[0].uuid)
    assert static["failed"] and static["dir_name"] == str(folder) and static["custodian_errors"]
    ts = store.get_output(collect.uuid)
    assert ts["material_ids"] == ["Cu"] and [(f["material_id"], f["stage"]) for f in ts["failed"]] == [("NaCl", "label")]
