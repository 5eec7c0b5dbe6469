"""FireWorks on a real MongoDB wire protocol (mongoeco): categories, separate worker processes,
exactly-once execution, outputs in MongoDB + GridFS."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from phonon_flows.cli import submit_hint
from phonon_flows.fireworks import flow_to_workflow, get_launchpad, submit, write_jobflow_config
from phonon_flows.store import get_store

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

import fw_jobs  # noqa: E402
from _fw_workers import start_workers, wait_workers, worker_yaml  # noqa: E402

WORKER_TIMEOUT_S = 300


# -- conversion (no server needed) ----------------------------------------------------------------


def test_flow_to_workflow_tags_every_firework():
    flow = fw_jobs.campaign_flow(n_labels=2)
    wf = flow_to_workflow(flow)
    by_name = {}
    for fw in wf.fws:
        by_name.setdefault(fw.name, set()).add(fw.spec["_category"])
    assert by_name == {"label": {"cpu"}, "train": {"gpu"}, "mlip_phonon": {"gpu"}, "benchmark": {"cpu"}}
    # the jobs carry the default too, so jobs they create at run time inherit it
    bench = next(j for j in flow.jobs if j.name == "benchmark")
    assert bench.config.manager_config["_category"] == "cpu"
    # the JobStore is not baked into the Fireworks: each worker uses its own jobflow settings
    assert all(fw.tasks[0]["store"] is None for fw in wf.fws)
    # untagged jobs stay untagged on request
    untagged = flow_to_workflow(fw_jobs.campaign_flow(n_labels=1), categories=False)
    assert [fw.spec.get("_category") for fw in untagged.fws if fw.name == "benchmark"] == [None]


def test_flow_to_workflow_rejects_unknown_category():
    from phonon_flows.errors import InputError

    j = fw_jobs.benchmark([])
    j.update_config({"manager_config": {"_category": "tpu"}})
    with pytest.raises(InputError, match="tpu"):
        flow_to_workflow(j)
    with pytest.raises(InputError, match="default_category"):
        flow_to_workflow(fw_jobs.benchmark([]), default_category="quantum")


def test_example_config_files_load():
    from fireworks import FWorker
    from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter
    from jobflow import JobStore

    assert FWorker.from_file(str(REPO / "my_fworker_gpu.yaml")).category == "gpu"
    assert FWorker.from_file(str(REPO / "my_fworker_cpu.yaml")).category == "cpu"
    lp = yaml.safe_load((REPO / "launchpad.yaml.example").read_text())
    assert lp["uri_mode"] is True and lp["host"].startswith("mongodb")
    assert not (REPO / "my_qadapter.yaml").exists()  # one adapter per queue, below
    for category in ("gpu", "cpu"):
        qadapter = CommonAdapter.from_file(str(REPO / f"my_qadapter_{category}.yaml"))
        assert qadapter.q_type == "SLURM"
        script = qadapter.get_script_str("launch_dir")
        assert f"#SBATCH --partition={category}" in script
        assert ("--gres=gpu:1" in script) == (category == "gpu")
        assert f'rlaunch -l "$PHONON_FLOWS_FW_DIR/launchpad.yaml" -w "$PHONON_FLOWS_FW_DIR/my_fworker_{category}.yaml"' \
            in script
        assert "JOBFLOW_CONFIG_FILE" in script and "/path/to" not in script
    spec = yaml.safe_load((REPO / "jobflow.yaml.example").read_text())["JOB_STORE"]
    store = JobStore.from_dict_spec(spec)
    assert type(store.docs_store).__name__ == "MongoStore"
    assert type(store.additional_stores["data"]).__name__ == "GridFSStore"


def test_every_launch_line_names_the_launchpad():
    """Without -l, rlaunch/qlaunch connect to localhost:27017 whatever sits in the folder."""
    import re

    texts = {p.name: p.read_text() for p in [REPO / "README.md", *REPO.glob("my_*.yaml")]}
    texts["submit's hint"] = submit_hint("x", 1, {})
    lines = [(name, line) for name, text in texts.items() for line in text.splitlines()
             if re.search(r"\b[rq]launch\b +-", line)]
    assert len(lines) >= 6
    for name, line in lines:
        assert re.search(r"\b[rq]launch .*-l ", line), (name, line)


# -- on the mongoeco server ---------------------------------------------------------------------


def _setup(tmp: Path, mongo_uri: str, db: str):
    launchpad = get_launchpad(mongo_uri, f"{db}_fw")
    launchpad.reset("", require_password=False)
    # the launchpad file the workers read, from the repo's example with this server's URI
    lp = yaml.safe_load((REPO / "launchpad.yaml.example").read_text())
    lp.update(host=mongo_uri, name=f"{db}_fw")
    lp_yaml = tmp / "launchpad.yaml"
    lp_yaml.write_text(yaml.safe_dump(lp))
    jobflow_yaml = write_jobflow_config(tmp / "jobflow.yaml", mongo_uri, database=db)
    return launchpad, lp_yaml, jobflow_yaml


def _launch_report(launchpad):
    """fw_id -> (name, state, category, [launch fworker categories], [launch fworker names])"""
    report = {}
    projection = {"fw_id": 1, "name": 1, "state": 1, "spec._category": 1, "launches": 1, "archived_launches": 1}
    for fw in launchpad.fireworks.find({}, projection):
        launches = list(launchpad.launches.find({"fw_id": fw["fw_id"]}))
        report[fw["fw_id"]] = {
            "name": fw["name"],
            "state": fw["state"],
            "category": fw.get("spec", {}).get("_category"),
            "fw_launch_ids": list(fw.get("launches", [])) + list(fw.get("archived_launches", [])),
            "launch_categories": [lau["fworker"]["category"] for lau in launches],
            "workers": [lau["fworker"]["name"] for lau in launches],
            "launch_states": [lau["state"] for lau in launches],
        }
    return report


@pytest.mark.slow
def test_campaign_on_gpu_and_cpu_workers(mongo_uri, mongo_db_name, tmp_path):
    launchpad, lp_yaml, jobflow_yaml = _setup(tmp_path, mongo_uri, mongo_db_name)
    flow = fw_jobs.campaign_flow(n_labels=3)
    job_uuids = {j.uuid: j.name for j in flow.jobs}
    submit(flow, launchpad)
    assert launchpad.fireworks.count_documents({}) == 7

    workers = [
        worker_yaml(tmp_path, "my_fworker_gpu.yaml", "gpu-1"),
        worker_yaml(tmp_path, "my_fworker_cpu.yaml", "cpu-1"),
    ]
    wait_workers(start_workers(tmp_path, lp_yaml, jobflow_yaml, workers, WORKER_TIMEOUT_S), tmp_path, WORKER_TIMEOUT_S)

    report = _launch_report(launchpad)
    # 7 submitted + 6 created at run time: each mlip_phonon is replaced by two part_jobs and
    # jobflow's store_inputs job, which stores the replacement's output under the original uuid
    assert len(report) == 13, report
    assert launchpad.launches.count_documents({}) == len(report)
    assert launchpad.fireworks.count_documents({"archived_launches.0": {"$exists": True}}) == 0
    for fw_id, r in report.items():
        assert r["state"] == "COMPLETED", (fw_id, r)
        assert len(r["fw_launch_ids"]) == 1 and r["launch_states"] == ["COMPLETED"], (fw_id, r)
        assert r["launch_categories"] == [r["category"]], (fw_id, r)
        assert r["workers"] == [f"{r['category']}-1"], (fw_id, r)
    categories = {}
    for r in report.values():
        categories.setdefault(r["name"], set()).add(r["category"])
    assert categories == {
        "label": {"cpu"},
        "train": {"gpu"},
        "mlip_phonon": {"gpu"},
        "part_job": {"gpu"},  # inherited from the job they replaced
        "store_inputs": {"gpu"},
        "benchmark": {"cpu"},  # untagged -> cpu
    }

    # outputs in the JobStore on the same server: documents in MongoDB, large arrays in GridFS
    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name, connect=True)
    try:
        for uuid, name in job_uuids.items():
            docs = list(store.query({"uuid": uuid}, properties=["uuid", "index", "output"], load=False))
            assert docs, (name, uuid)
        for i in range(3):
            doc = store.query_one({"name": "label", "output.i": i}, load=True)
            np.testing.assert_array_equal(np.asarray(doc["output"]["forces"]), np.random.default_rng(i).normal(size=(64, 3)))
        bench = store.query_one({"name": "benchmark"}, load=False)
        assert bench["output"]["count"] == 2
        train_out = store.query_one({"name": "train"}, load=False)["output"]
        assert train_out["n"] == 3 and train_out["sum"] == 3.0
        parts = [d["output"] for d in store.query({"name": "part_job"}, load=False)]
        assert sorted((p["k"], p["j"]) for p in parts) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        db = store.docs_store._collection.database
        assert db["phonon_flows_data.files"].count_documents({}) == 3
    finally:
        store.close()
        launchpad.connection.close()


@pytest.mark.slow
def test_three_cpu_workers_never_run_a_firework_twice(mongo_uri, mongo_db_name, tmp_path):
    launchpad, lp_yaml, jobflow_yaml = _setup(tmp_path, mongo_uri, mongo_db_name)
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    n_fw = 10
    from jobflow import Flow

    jobs = [fw_jobs.rendezvous(i, str(meeting), wait_for=3) for i in range(n_fw)]
    submit(Flow(jobs, name="concurrency"), launchpad)

    workers = [worker_yaml(tmp_path, "my_fworker_cpu.yaml", f"cpu-{k}") for k in (1, 2, 3)]
    wait_workers(start_workers(tmp_path, lp_yaml, jobflow_yaml, workers, WORKER_TIMEOUT_S), tmp_path, WORKER_TIMEOUT_S)

    report = _launch_report(launchpad)
    assert len(report) == n_fw
    assert launchpad.launches.count_documents({}) == n_fw
    assert launchpad.launches.count_documents({}) == len(report)
    assert launchpad.fireworks.count_documents({"archived_launches.0": {"$exists": True}}) == 0
    for fw_id, r in report.items():
        assert r["state"] == "COMPLETED" and len(r["fw_launch_ids"]) == 1, (fw_id, r)
        assert r["launch_categories"] == ["cpu"], (fw_id, r)
    per_worker = {}
    for r in report.values():
        per_worker[r["workers"][0]] = per_worker.get(r["workers"][0], 0) + 1
    # the rendezvous job holds each worker until all three have started one: they really overlapped
    assert set(per_worker) == {"cpu-1", "cpu-2", "cpu-3"}, per_worker
    assert len({p.name.split("-")[0] for p in meeting.iterdir()}) == 3

    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name, connect=True)
    try:
        outputs = list(store.query({"name": "rendezvous"}, load=False))
        assert sorted(d["output"]["i"] for d in outputs) == list(range(n_fw))  # each job stored once
        assert len({d["uuid"] for d in outputs}) == n_fw
    finally:
        store.close()
        launchpad.connection.close()


@pytest.mark.slow
def test_real_phonon_flow_on_fireworks(mongo_uri, mongo_db_name, tmp_path):
    """PhononMaker with ASE's EMT through FireWorks: a one-job engine phonon (tagged gpu here, as
    the MLIP phonons are) and the force-maker flow (cpu: displacements, dynamic force jobs, collect).
    Both routes must give the same phonons; the PhononDocs are found with PhononResults."""
    from ase.build import bulk
    from jobflow import Flow
    from pymatgen.io.ase import AseAtomsAdaptor

    from phonon_flows.makers import PhononMaker, ReferenceForceMaker
    from phonon_flows.makers.base import set_category
    from phonon_flows.results import PhononResults
    from phonon_flows.store import tag_metadata

    launchpad, lp_yaml, jobflow_yaml = _setup(tmp_path, mongo_uri, mongo_db_name)
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.61))
    engine_job = set_category(PhononMaker(engine="emt").make(cu, material_id="Cu-engine"), "gpu")
    maker_flow = PhononMaker(force_maker=ReferenceForceMaker(engine="emt")).make(cu, material_id="Cu-force-maker")
    flow = Flow([engine_job, maker_flow], name="emt phonons")
    tag_metadata(flow, campaign="fw-emt")
    submit(flow, launchpad)

    workers = [
        worker_yaml(tmp_path, "my_fworker_gpu.yaml", "gpu-1"),
        worker_yaml(tmp_path, "my_fworker_cpu.yaml", "cpu-1"),
    ]
    wait_workers(start_workers(tmp_path, lp_yaml, jobflow_yaml, workers, WORKER_TIMEOUT_S), tmp_path, WORKER_TIMEOUT_S)

    report = _launch_report(launchpad)
    assert launchpad.launches.count_documents({}) == len(report)
    for fw_id, r in report.items():
        assert r["state"] == "COMPLETED" and len(r["fw_launch_ids"]) == 1, (fw_id, r)
        assert r["launch_categories"] == [r["category"]], (fw_id, r)
    gpu_names = sorted(r["name"] for r in report.values() if r["category"] == "gpu")
    assert gpu_names == ["phonons emt Cu-engine"]
    # displacements, run displacements, its force job(s) created at run time, collect
    assert sum(r["category"] == "cpu" for r in report.values()) >= 4

    results = PhononResults(get_store(mongo_uri=mongo_uri, database=mongo_db_name))
    try:
        docs = {d["material_id"]: d for d in results.find(campaign="fw-emt", formula="Cu", engine="emt")}
        assert set(docs) == {"Cu-engine", "Cu-force-maker"}
        a, b = docs["Cu-engine"], docs["Cu-force-maker"]
        for t in ("T300", "T1000"):
            for field in ("A_vib_meV_per_atom", "Cv_J_per_K_mol", "S_J_per_K_mol"):
                assert a["thermal"][t][field] == pytest.approx(b["thermal"][t][field], rel=1e-9, abs=1e-9)
        assert a["dynamically_stable"] and b["dynamically_stable"]
        # fcc Cu, 3 acoustic modes: C_v at 1000 K is close to the Dulong-Petit limit 3R
        assert a["thermal"]["T1000"]["Cv_J_per_K_mol"] == pytest.approx(3 * 8.314462618, rel=0.01)
        fc_a, fc_b = results.force_constants(a), results.force_constants(b)
        assert fc_a.shape == (1, 64, 3, 3)
        np.testing.assert_allclose(fc_a, fc_b, atol=1e-10)
        # acoustic sum rule of the force constants (finite differences, no symmetrisation needed for EMT)
        np.testing.assert_allclose(fc_a.sum(axis=1), 0, atol=1e-6)
        assert results.band_structure(a).labels
        assert results.count(campaign="fw-emt", A_vib=(-20, -15)) == 2
    finally:
        results.close()
        launchpad.connection.close()


# -- reliability: three workers at once on a real (tiny) campaign flow ------------------------------


@pytest.mark.slow
def test_three_workers_on_a_campaign_flow_launch_each_firework_once(mongo_uri, mongo_db_name, tmp_path, monkeypatch):
    """Two cpu workers and a gpu worker pull the Fireworks of a TrainingCampaignMaker flow (EMT
    reference, 3 training materials whose perturb/label Fireworks are ready at the same time, one
    held out) from one LaunchPad: every Firework is launched exactly once, and every job output is
    stored exactly once."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    from phonon_flows.flows import TrainingCampaignMaker
    from phonon_flows.makers.benchmark import BenchmarkMaker
    from phonon_flows.results import PhononResults

    launchpad, lp_yaml, jobflow_yaml = _setup(tmp_path, mongo_uri, mongo_db_name)
    monkeypatch.setenv("PHONON_FLOWS_MODEL_CACHE", str(tmp_path / "model_cache"))  # the gpu worker fetches the model
    materials = {
        name: AseAtomsAdaptor.get_structure(bulk(el, lat, **kw))
        for name, (el, lat, kw) in {
            "Cu-hcp": ("Cu", "hcp", {"a": 2.56, "c": 4.18}), "Au-fcc": ("Au", "fcc", {"a": 4.08}),
            "Cu-bcc": ("Cu", "bcc", {"a": 2.87}), "Cu-fcc": ("Cu", "fcc", {"a": 3.61}),
        }.items()
    }
    maker = TrainingCampaignMaker(
        name="fw-three", engine="emt", n_perturbations=2, min_atoms=8, max_atoms=40, relax=False, preset="small",
        hyperparameters={"max_num_epochs": 2, "start_swa": 1}, training_kwargs={"num_threads": 1, "device": "cpu"},
        mlip_engine_kwargs={"device": "cpu"}, benchmark_maker=BenchmarkMaker(write_figures=False),
    )
    flow = maker.make(materials, holdout=["Cu-fcc"])
    uuids = [j.uuid for j in flow.jobs]
    submit(flow, launchpad)
    n_fw = launchpad.fireworks.count_documents({})
    assert n_fw == len(uuids) == 12  # campaign, 3 x (perturb, label), training set, train, 2 phonons, benchmark

    workers = [worker_yaml(tmp_path, "my_fworker_cpu.yaml", f"cpu-{k}") for k in (1, 2)]
    workers.append(worker_yaml(tmp_path, "my_fworker_gpu.yaml", "gpu-1"))
    wait_workers(start_workers(tmp_path, lp_yaml, jobflow_yaml, workers, WORKER_TIMEOUT_S), tmp_path, WORKER_TIMEOUT_S)

    report = _launch_report(launchpad)
    assert len(report) == n_fw  # a static flow: nothing created at run time
    assert launchpad.launches.count_documents({}) == n_fw  # no Firework launched twice
    assert launchpad.fireworks.count_documents({"archived_launches.0": {"$exists": True}}) == 0
    for fw_id, r in report.items():
        assert r["state"] == "COMPLETED", (fw_id, r)
        assert len(r["fw_launch_ids"]) == 1 and r["launch_states"] == ["COMPLETED"], (fw_id, r)
        assert r["launch_categories"] == [r["category"]], (fw_id, r)
    per_worker: dict[str, int] = {}
    for r in report.values():
        per_worker[r["workers"][0]] = per_worker.get(r["workers"][0], 0) + 1
    assert per_worker.get("gpu-1") == 2 and sum(per_worker.values()) == n_fw, per_worker
    print(f"launches per worker: {per_worker}")

    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name, connect=True)
    try:
        docs = list(store.docs_store.query({"uuid": {"$in": uuids}}, properties=["uuid", "index"]))
        assert sorted(d["uuid"] for d in docs) == sorted(uuids)  # every output, each exactly once
        assert len({(d["uuid"], d["index"]) for d in docs}) == len(docs)
        found = PhononResults(store).find(campaign="fw-three")
        assert sorted(d["engine"]["name"] for d in found) == ["emt", "mace"]
        ts = store.query_one({"metadata.phonon_flows.campaign": "fw-three", "metadata.phonon_flows.stage": "training-set"})
        assert ts["output"]["material_ids"] == ["Cu-hcp", "Au-fcc", "Cu-bcc"]
    finally:
        store.close()
        launchpad.connection.close()


def test_write_fworker_renames_a_shipped_worker_and_names_a_bad_file(tmp_path):
    from fireworks import FWorker

    from phonon_flows.errors import InputError
    from phonon_flows.fireworks import write_fworker

    path = write_fworker(REPO / "my_fworker_gpu.yaml", "gpu-7", tmp_path)
    worker = FWorker.from_file(str(path))
    assert path.name == "gpu-7.yaml" and worker.name == "gpu-7" and worker.category == "gpu"
    (tmp_path / "bad.yaml").write_text("just text\n")
    with pytest.raises(InputError, match="bad.yaml"):
        write_fworker(tmp_path / "bad.yaml", "x", tmp_path)
    with pytest.raises(InputError, match="missing.yaml"):
        write_fworker(tmp_path / "missing.yaml", "x", tmp_path)
