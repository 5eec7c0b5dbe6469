"""qlaunch with the shipped queue adapters (my_qadapter_gpu.yaml, my_qadapter_cpu.yaml) and worker
files, unchanged, as the README runs them. A stub ``sbatch`` on the PATH keeps each queue script and
runs it the way SLURM would (in the folder it was submitted from, with the submitting environment);
the scripts' rlaunch then runs the Firework of its category. One tiny material: a screening's
campaign record (cpu) and MACE phonons (gpu)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ase.build import bulk
from typer.testing import CliRunner

from phonon_flows.cli import app
from phonon_flows.fireworks import write_jobflow_config
from phonon_flows.store import get_store
from phonon_flows.results import PhononResults
from test_fireworks_failures import write_cifs, write_launchpad_yaml

REPO = Path(__file__).resolve().parents[1]

SBATCH = """#!/bin/bash
# stand-in for SLURM's sbatch: keep the script, run it in this folder with this environment
n=$(( $(ls "$SBATCH_LOG" | grep -c '\\.sh$') + 1 ))
cp "$1" "$SBATCH_LOG/job$n.sh"
bash "$1" > "$SBATCH_LOG/job$n.out" 2>&1
echo "Submitted batch job $n"
"""
SQUEUE = """#!/bin/bash
echo "JOBID PARTITION NAME USER ST TIME NODES NODELIST(REASON)"
"""


@pytest.mark.slow
def test_qlaunch_with_the_shipped_adapters(mongo_uri, mongo_db_name, tmp_path, tiny_mace_model, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("my_fworker_gpu.yaml", "my_fworker_cpu.yaml", "my_qadapter_gpu.yaml", "my_qadapter_cpu.yaml"):
        shutil.copy(REPO / name, project / name)
    write_launchpad_yaml(project / "launchpad.yaml", mongo_uri, f"{mongo_db_name}_fw")
    write_jobflow_config(project / "jobflow.yaml", mongo_uri, database=mongo_db_name)
    bin_dir, log_dir = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    log_dir.mkdir()
    for name, text in (("sbatch", SBATCH), ("squeue", SQUEUE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)

    monkeypatch.chdir(project)
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(project / "jobflow.yaml"))
    cif = write_cifs(tmp_path / "structures", {"Cu-fcc": bulk("Cu", "fcc", a=3.6)})
    sub = CliRunner().invoke(app, ["submit", *cif, "--screen", "--model", str(tiny_mace_model.path), "--name", "q",
                                   "--min-atoms", "8", "--max-atoms", "40", "--device", "cpu",
                                   "--launchpad", "launchpad.yaml"])
    assert sub.exit_code == 0, sub.output

    env = {k: v for k, v in os.environ.items() if k != "JOBFLOW_CONFIG_FILE"}  # the adapters set it
    env.update(PATH=f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}", SBATCH_LOG=str(log_dir),
               PHONON_FLOWS_FW_DIR=str(project), PHONON_FLOWS_MODEL_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1")
    for category in ("cpu", "gpu"):
        run = subprocess.run(["qlaunch", "-l", "launchpad.yaml", "-w", f"my_fworker_{category}.yaml",
                              "-q", f"my_qadapter_{category}.yaml", "rapidfire", "--sleep", "1"],
                             cwd=project, env=env, capture_output=True, text=True, timeout=400)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    scripts = sorted(log_dir.glob("job*.sh"))
    assert len(scripts) == 2
    outs = {p: (p.with_suffix(".out")).read_text() for p in scripts}
    for script, category in zip(scripts, ("cpu", "gpu")):
        text = script.read_text()
        assert f"#SBATCH --partition={category}" in text and ("--gres=gpu:1" in text) == (category == "gpu")
        assert f'-w "$PHONON_FLOWS_FW_DIR/my_fworker_{category}.yaml"' in text
        out = outs[script]
        assert "Rocket finished" in out, out[-3000:]
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert not any(" DEBUG " in ln for ln in lines), out[-3000:]  # no DEBUG leaking from the job
        assert len(lines) == len(set(lines)), out[-3000:]  # no line printed twice

    from fireworks import LaunchPad

    lp = LaunchPad.from_file(str(project / "launchpad.yaml"))
    fws = list(lp.fireworks.find({}, {"state": 1, "spec._category": 1, "launches": 1}))
    assert len(fws) == 2 and all(fw["state"] == "COMPLETED" for fw in fws)
    for fw in fws:
        (launch,) = lp.launches.find({"launch_id": {"$in": fw["launches"]}})
        assert launch["fworker"]["category"] == fw["spec"]["_category"]
        assert (Path(launch["launch_dir"]) / "job.log").is_file()  # the job's log, in its launch directory
    st = CliRunner().invoke(app, ["status", "q", "-l", "launchpad.yaml", "--json"])
    counts = json.loads(st.stdout)["campaigns"][0]["counts"]
    assert counts["done"] == 3 and counts["failed"] == counts["pending"] == 0, st.output  # + the PhononDoc
    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name)
    (doc,) = PhononResults(store).find(campaign="q")
    assert doc["material_id"] == "Cu-fcc" and doc["engine"]["model_sha256"] == tiny_mace_model.sha256
    assert re.fullmatch(r"[0-9a-f]{64}", doc["engine"]["model_sha256"])
    lp.connection.close()
    store.close()
