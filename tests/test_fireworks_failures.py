"""A campaign on FireWorks where one job is killed, run the way the README says: `model add`, `submit`
(a fresh LaunchPad is initialised by it), workers of each category, `status -l launchpad.yaml`
during and after, FireWorks' `detect_lostruns --fizzle`, `phonon-flows rerun CAMPAIGN -l
launchpad.yaml`. The killed material's FIZZLED Firework does not stall the campaign: the batched
phonon job that needs both relaxations runs anyway (the killed material gets a failed PhononDoc
that says why), the other material completes, and `rerun` finishes the campaign."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ase.build import bulk
from jobflow import SETTINGS
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter
from typer.testing import CliRunner

from phonon_flows.cli import app
from phonon_flows.fireworks import run_worker, write_jobflow_config
from phonon_flows.results import PhononResults
from phonon_flows.store import get_store

REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = "fw-kill"


def write_launchpad_yaml(path: Path, uri: str, name: str) -> Path:
    lp = yaml.safe_load((REPO / "launchpad.yaml.example").read_text())
    lp.update(host=uri, name=name, strm_lvl="INFO")
    path.write_text(yaml.safe_dump(lp))
    return path


def write_cifs(folder: Path, names: dict) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, atoms in names.items():
        out.append(str(folder / f"{name}.cif"))
        CifWriter(AseAtomsAdaptor.get_structure(atoms)).write_file(out[-1])
    return out


def status_json(lp_yaml: Path) -> dict:
    res = CliRunner().invoke(app, ["status", CAMPAIGN, "-l", str(lp_yaml), "--json"])
    assert res.exit_code == 0, res.output
    (camp,) = json.loads(res.stdout)["campaigns"]
    return camp


@pytest.mark.slow
def test_killed_job_is_skipped_downstream_and_rerun(mongo_uri, mongo_db_name, tmp_path, tiny_mace_model,
                                                    monkeypatch):
    from fireworks import FWorker, LaunchPad

    lp_yaml = write_launchpad_yaml(tmp_path / "launchpad.yaml", mongo_uri, f"{mongo_db_name}_fw")
    jobflow_yaml = write_jobflow_config(tmp_path / "jobflow.yaml", mongo_uri, database=mongo_db_name)
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(jobflow_yaml))
    monkeypatch.setenv("PHONON_FLOWS_MODEL_CACHE", str(tmp_path / "model_cache"))
    monkeypatch.chdir(tmp_path)
    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name)
    monkeypatch.setattr(SETTINGS, "JOB_STORE", store)  # the in-process workers' JOB_STORE (= jobflow.yaml's)

    added = CliRunner().invoke(app, ["model", "add", str(tiny_mace_model.path)])
    assert added.exit_code == 0, added.output
    assert tiny_mace_model.sha256 in added.stdout and mongo_db_name in added.stdout  # says which store
    files = write_cifs(tmp_path / "structures", {"Cu-fcc": bulk("Cu", "fcc", a=3.6), "Al-fcc": bulk("Al", "fcc", a=4.05)})
    sub = CliRunner().invoke(app, ["submit", *files, "--screen", "--model", tiny_mace_model.sha256[:10],
                                   "--screen-relax", "positions", "--name", CAMPAIGN, "--min-atoms", "8",
                                   "--max-atoms", "40", "--device", "cpu", "-l", str(lp_yaml)])
    assert sub.exit_code == 0, sub.output
    assert "initialised the empty LaunchPad" in sub.stderr  # no "Could not get next FW id"
    assert "-l launchpad.yaml" in sub.stdout
    lp = LaunchPad.from_file(str(lp_yaml))
    assert lp.fireworks.count_documents({}) == 4  # campaign, 2 relax, 1 batched phonon job
    assert all(fw["spec"]["_allow_fizzled_parents"] for fw in lp.fireworks.find({}, {"spec": 1}))

    # right after submit the campaign is known (from the LaunchPad): everything pending
    st = status_json(lp_yaml)
    # jobs: campaign, 2 relax, the phonon batch and its 2 per-material PhononDocs
    assert st["counts"] == {"done": 0, "failed": 0, "skipped": 0, "running": 0, "pending": 6}

    cpu = FWorker.from_file(str(REPO / "my_fworker_cpu.yaml"))
    gpu = FWorker.from_file(str(REPO / "my_fworker_gpu.yaml"))
    assert run_worker(lp, cpu, sleep_time=0.2, m_dir=tmp_path / "cpu") == 1  # the campaign record

    # a gpu rocket, killed while it runs its job (a walltime, a kill -9)
    (tmp_path / "killed").mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rlaunch = str(Path(sys.executable).parent / "rlaunch")
    proc = subprocess.Popen([rlaunch, "-l", str(lp_yaml), "-w", str(REPO / "my_fworker_gpu.yaml"), "singleshot"],
                            cwd=tmp_path / "killed", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while lp.fireworks.count_documents({"state": "RUNNING"}) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "the rocket never ran"
            time.sleep(0.05)
        st = status_json(lp_yaml)  # during: one job running
        assert st["counts"]["running"] == 1 and st["counts"]["done"] == 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = lp.fireworks.find_one({"state": "RUNNING"})
    assert killed["spec"]["phonon_flows"]["stage"] == "relax"
    victim = killed["spec"]["phonon_flows"]["material_id"]
    other = ({"Cu-fcc", "Al-fcc"} - {victim}).pop()
    lp.detect_lostruns(expiration_secs=0, fizzle=True)  # `lpad detect_lostruns --time 0 --fizzle`
    assert lp.get_fw_by_id(killed["fw_id"]).state == "FIZZLED"

    # the rest of the campaign runs (the other relaxation, the phonon batch with a fizzled parent)
    assert run_worker(lp, gpu, sleep_time=0.2, m_dir=tmp_path / "gpu") == 2
    st = status_json(lp_yaml)
    # failed: the killed relaxation, the victim's PhononDoc, and the batch (its document says a material failed)
    assert st["counts"] == {"done": 3, "failed": 3, "skipped": 0, "running": 0, "pending": 0}, st["failures"]
    failed = {f["stage"]: f for f in st["failures"]}
    assert "relaxation" in failed["phonon-mlip"]["reason"]
    assert failed["relax"]["material_id"] == victim and "lost" in failed["relax"]["reason"]
    assert failed["relax"]["directory"]  # the launch directory (job.log)
    assert failed["phonon-mlip"]["material_id"] == victim
    text = CliRunner().invoke(app, ["status", CAMPAIGN, "-l", str(lp_yaml)])
    assert f"rerun {CAMPAIGN} -l" in text.stdout and "job.log" in text.stdout
    ok = [d["material_id"] for d in PhononResults(store).find(campaign=CAMPAIGN)]
    assert ok == [other]

    # rerun: the fizzled relax goes back to the queue with its child (the batch), and all finish
    rr = CliRunner().invoke(app, ["rerun", CAMPAIGN, "-l", str(lp_yaml)])
    assert rr.exit_code == 0 and "2 Firework(s) back to READY" in rr.stdout, rr.output  # relax + batch
    assert run_worker(lp, gpu, sleep_time=0.2, m_dir=tmp_path / "gpu2") == 2
    st = status_json(lp_yaml)
    assert st["counts"] == {"done": 6, "failed": 0, "skipped": 0, "running": 0, "pending": 0}, st["failures"]
    docs = PhononResults(store).find(campaign=CAMPAIGN)
    assert sorted(d["material_id"] for d in docs) == ["Al-fcc", "Cu-fcc"] and not any(d["failed"] for d in docs)
    assert all(d["engine"]["model_sha256"] == tiny_mace_model.sha256 for d in docs)
    lp.connection.close()
    store.close()


# -- a job that raises, and the job that needs its output ----------------------------------------
from jobflow import Flow, job  # noqa: E402


@job
def label_or_fail(i: int) -> dict:
    if i == 1:
        raise ValueError(f"material m{i}: SCF did not converge")
    return {"i": i}


@job
def needs(labelled: dict) -> dict:
    return {"got": labelled["i"]}


@job
def collect(results: list) -> dict:
    return {"n": len([r for r in results if r])}


def test_a_raising_job_fizzles_its_dependents_are_skipped_and_the_rest_completes(mongo_uri, mongo_db_name,
                                                                                  tmp_path, monkeypatch):
    from fireworks import FWorker
    from jobflow.core.reference import OnMissing

    from phonon_flows.fireworks import get_launchpad, rerun_campaign_fireworks, submit
    from phonon_flows.runner import failure_records
    from phonon_flows.store import tag_metadata

    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name)
    monkeypatch.setattr(SETTINGS, "JOB_STORE", store)
    labels = [tag_metadata(label_or_fail(i), campaign="t", material_id=f"m{i}", stage="label") for i in range(3)]
    dependents = [tag_metadata(needs(lab.output), campaign="t", material_id=f"m{i}", stage="phonon-reference")
                  for i, lab in enumerate(labels)]
    last = tag_metadata(collect([d.output for d in dependents]), campaign="t", stage="benchmark")
    last.config.on_missing_references = OnMissing.NONE
    lp = get_launchpad(mongo_uri, f"{mongo_db_name}_fw")  # a new database: submit initialises it
    submit(Flow([*labels, *dependents, last]), lp)

    cpu = FWorker.from_file(str(REPO / "my_fworker_cpu.yaml"))
    assert run_worker(lp, cpu, sleep_time=0.2, m_dir=tmp_path / "w") == 7  # nothing stalls
    states = {fw["name"] + str(fw["spec"]["phonon_flows"].get("material_id")): fw["state"]
              for fw in lp.fireworks.find({}, {"name": 1, "state": 1, "spec.phonon_flows": 1})}
    assert states["label_or_failm1"] == "FIZZLED" and states["needsm1"] == "COMPLETED"
    assert sum(s == "COMPLETED" for s in states.values()) == 6
    by_state = {r["state"]: r for r in failure_records(store, campaign="t")}
    assert by_state["failed"]["reason"] == "ValueError: material m1: SCF did not converge"
    assert "SCF did not converge" in (Path(by_state["failed"]["directory"]) / "job.log").read_text()
    assert by_state["skipped"]["stage"] == "phonon-reference" and "SCF did not converge" in by_state["skipped"]["reason"]
    assert store.query_one({"uuid": last.uuid}, load=True)["output"] == {"n": 2}
    # rerun puts the failed job (its children with it) back in the queue
    ids = rerun_campaign_fireworks(lp, "t", store=store)
    assert len(ids) == 2 and lp.fireworks.count_documents({"state": {"$in": ["READY", "WAITING"]}}) == 3
    lp.connection.close()
    store.close()
