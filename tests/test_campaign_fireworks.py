"""A real (tiny) training campaign on FireWorks: submitted with `phonon-flows submit`, run by a gpu
and a cpu rocket launcher in separate processes (the model a committee of two) against the mongoeco wire-protocol server; every
Firework completes exactly once on a worker of its category, and the results land in MongoDB +
GridFS where the query API, `status` and `report` find them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter
from typer.testing import CliRunner

from _fw_workers import start_workers, wait_workers, worker_yaml

from phonon_flows.cli import app
from phonon_flows.fireworks import get_launchpad, write_jobflow_config
from phonon_flows.runner import campaign_status
from phonon_flows.results import PhononResults
from phonon_flows.store import get_store

REPO = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT_S = 420
CAMPAIGN = "fw-emt"


def _structures(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for name, atoms in (("Cu-hcp", bulk("Cu", "hcp", a=2.56, c=4.18)), ("Cu-fcc", bulk("Cu", "fcc", a=3.61))):
        paths.append(folder / f"{name}.cif")
        CifWriter(AseAtomsAdaptor.get_structure(atoms)).write_file(paths[-1])
    return paths


@pytest.mark.slow
def test_campaign_on_a_gpu_and_a_cpu_worker(mongo_uri, mongo_db_name, tmp_path):
    lp_db = f"{mongo_db_name}_fw"
    launchpad = get_launchpad(mongo_uri, lp_db)
    launchpad.reset("", require_password=False)
    lp = yaml.safe_load((REPO / "launchpad.yaml.example").read_text())
    lp.update(host=mongo_uri, name=lp_db)
    lp_yaml = tmp_path / "launchpad.yaml"
    lp_yaml.write_text(yaml.safe_dump(lp))
    jobflow_yaml = write_jobflow_config(tmp_path / "jobflow.yaml", mongo_uri, database=mongo_db_name)

    files = _structures(tmp_path / "structures")
    args = ["submit", *map(str, files), "--name", CAMPAIGN, "--holdout", "Cu-fcc", "--engine", "emt",
            "--preset", "small", "--epochs", "2", "--n-perturbations", "3", "--min-atoms", "8", "--max-atoms", "40",
            "--no-relax", "--device", "cpu", "--committee", "2", "--launchpad", str(lp_yaml)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    n_fw = launchpad.fireworks.count_documents({})
    # campaign, perturb, label, training set, train, 2 phonons, benchmark
    assert n_fw == 8 and f"{n_fw} Fireworks" in result.stdout
    again = CliRunner().invoke(app, args)  # the same jobs twice: refused
    assert again.exit_code == 1 and "already in the LaunchPad" in again.stderr
    assert launchpad.fireworks.count_documents({}) == n_fw

    # the gpu worker fetches the model from GridFS
    env = {"OMP_NUM_THREADS": "1", "PHONON_FLOWS_MODEL_CACHE": str(tmp_path / "model_cache")}
    workers = [worker_yaml(tmp_path, template, name)
               for template, name in (("my_fworker_gpu.yaml", "gpu-1"), ("my_fworker_cpu.yaml", "cpu-1"))]
    wait_workers(start_workers(tmp_path, lp_yaml, jobflow_yaml, workers, WORKER_TIMEOUT_S, env), tmp_path,
                 WORKER_TIMEOUT_S)

    try:
        fws = list(launchpad.fireworks.find({}, {"fw_id": 1, "name": 1, "state": 1, "spec": 1, "launches": 1,
                                                 "archived_launches": 1}))
        assert len(fws) == n_fw  # a static flow: nothing created at run time
        for fw in fws:
            launches = list(launchpad.launches.find({"fw_id": fw["fw_id"]}))
            category = fw["spec"]["_category"]
            stage = fw["spec"]["phonon_flows"]["stage"]
            assert fw["state"] == "COMPLETED", (fw["name"], logs)
            assert len(launches) == 1 and not fw.get("archived_launches"), fw["name"]  # exactly once
            assert launches[0]["fworker"]["category"] == category, fw["name"]
            assert launches[0]["fworker"]["name"] == f"{category}-1"
            assert category == ("gpu" if stage in ("train", "phonon-mlip") else "cpu"), (stage, category)
        assert launchpad.launches.count_documents({}) == n_fw

        # results in MongoDB (+ GridFS): the query API, the status and the report find them
        store = get_store(mongo_uri=mongo_uri, database=mongo_db_name)
        found = PhononResults(store).find(campaign=CAMPAIGN)
        assert sorted(d["engine"]["name"] for d in found) == ["emt", "mace"]
        assert all(d["material_id"] == "Cu-fcc" and not d["failed"] for d in found)
        # --committee 2: the gpu worker loaded the two-member model file from GridFS; the spread is there
        mlip = next(d for d in found if d["engine"]["name"] == "mace")
        assert mlip["engine"]["settings"]["committee_size"] == 2 and mlip["committee_spread_THz"] > 0
        assert next(d for d in found if d["engine"]["name"] == "emt").get("committee_spread_THz") is None
        (status,) = campaign_status(store, CAMPAIGN)
        assert status.counts == {"done": n_fw, "failed": 0, "skipped": 0, "running": 0, "pending": 0}
        out = tmp_path / "report"
        rep = CliRunner().invoke(app, ["report", CAMPAIGN, "--out", str(out), "--mongo-uri", mongo_uri,
                                       "--database", mongo_db_name])
        assert rep.exit_code == 0, rep.output
        assert (out / "figures" / "parity_frequency.png").is_file()
        assert "committee of 2, seeds 123, 124" in (out / "summary.md").read_text()
        held = pd.read_csv(out / "materials.csv")
        assert held["committee_spread_THz"].tolist() == [pytest.approx(mlip["committee_spread_THz"])]
        st = CliRunner().invoke(app, ["status", CAMPAIGN, "--mongo-uri", mongo_uri, "--database", mongo_db_name,
                                      "--launchpad", str(lp_yaml), "--json"])
        assert st.exit_code == 0, st.output
        fw_counts = json.loads(st.stdout)["fireworks"][CAMPAIGN]["counts"]
        assert fw_counts == {"gpu": {"COMPLETED": 2}, "cpu": {"COMPLETED": 6}}
        store.close()
    finally:
        launchpad.connection.close()
