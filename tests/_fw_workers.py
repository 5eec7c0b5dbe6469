"""FireWorks worker processes as a user starts them: ``python -m phonon_flows.fireworks -l
launchpad.yaml -w my_fworker.yaml`` (one process per worker yaml, each in its own folder, its
output in ``<name>.log``), and the wait for them to finish."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from phonon_flows.fireworks import write_fworker

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def worker_yaml(tmp: Path, template: str, name: str) -> Path:
    """A copy of a shipped worker yaml (``my_fworker_gpu.yaml``, ...) under another name."""
    return write_fworker(REPO / template, name, tmp)


def start_workers(tmp: Path, lp_yaml: Path, jobflow_yaml: Path, workers: list[Path], timeout_s: float,
                  env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    base = dict(os.environ)
    base["JOBFLOW_CONFIG_FILE"] = str(jobflow_yaml)
    base["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), base.get("PYTHONPATH", "")])
    base.setdefault("OMP_NUM_THREADS", "1")
    base.update(env or {})
    procs = []
    for worker in workers:
        wdir = tmp / f"run_{worker.stem}"
        wdir.mkdir()
        log = open(tmp / f"{worker.stem}.log", "w")
        cmd = [sys.executable, "-m", "phonon_flows.fireworks", "-l", str(lp_yaml), "-w", str(worker)]
        cmd += ["--sleep", "0.5", "--timeout", str(timeout_s), "--dir", str(wdir)]
        procs.append(subprocess.Popen(cmd, cwd=wdir, env=base, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_workers(procs: list[subprocess.Popen], tmp: Path, timeout_s: float) -> None:
    """Wait for every worker (killing any still running after ``timeout_s`` + 60 s); each must exit 0."""
    try:
        for proc in procs:
            proc.wait(timeout=timeout_s + 60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(tmp.glob("*.log")))
    assert all(proc.returncode == 0 for proc in procs), logs
