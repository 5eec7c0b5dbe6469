"""Interrupted campaigns: a campaign killed with SIGKILL in the middle and run again ends with the
same documents as a clean run in another store, none of them twice.

The campaign runs in a subprocess (``phonon_flows.runner.run_campaign`` on the embedded store);
its EMT labelling is slowed down there so that the kill lands after some outputs are stored and
before the training starts (a training killed mid-way resumes from mace's checkpoint, which is
tested in tests/test_training.py). The job uuids are deterministic, so this process knows them
without talking to the subprocess.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phonon_flows.runner import running_records
from phonon_flows.store import get_store

REPO = Path(__file__).resolve().parents[1]

CAMPAIGN = """
import json
import sys
import time
from pathlib import Path

from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter

from phonon_flows.flows import TrainingCampaignMaker
from phonon_flows.makers.benchmark import BenchmarkMaker

CRYSTALS = {"Cu-hcp": ("Cu", "hcp", {"a": 2.56, "c": 4.18}), "Au-fcc": ("Au", "fcc", {"a": 4.08}),
            "Cu-fcc": ("Cu", "fcc", {"a": 3.61})}


def write_inputs(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (element, lattice, kw) in CRYSTALS.items():
        CifWriter(AseAtomsAdaptor.get_structure(bulk(element, lattice, **kw))).write_file(folder / f"{name}.cif")
    return sorted(folder.glob("*.cif"))


def make_flow(folder):
    maker = TrainingCampaignMaker(
        name="resume", engine="emt", n_perturbations=2, min_atoms=8, max_atoms=40, relax=False, preset="small",
        hyperparameters={"max_num_epochs": 2, "start_swa": 1}, training_kwargs={"num_threads": 1, "device": "cpu"},
        mlip_engine_kwargs={"device": "cpu"}, benchmark_maker=BenchmarkMaker(write_figures=False),
    )
    return maker.make(write_inputs(folder), holdout=["Cu-fcc"])
"""

MAIN = """
if __name__ == "__main__":
    from phonon_flows.runner import run_campaign
    from phonon_flows.store import get_store

    inputs, store_dir, work_dir, slow = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if slow:
        from phonon_flows.engines.reference import EmtEngine

        compute = EmtEngine._compute

        def slow_compute(self, atoms_list):
            time.sleep(slow)
            return compute(self, atoms_list)

        EmtEngine._compute = slow_compute
    summary = run_campaign(make_flow(inputs), get_store(store_dir=store_dir), progress=False, work_dir=work_dir)
    print("SUMMARY " + json.dumps(summary.counts), flush=True)
"""

#: fields that differ between two runs of the same work: when and where it ran, how long it took
IGNORED = {"_id", "completed_at", "wall_time", "seconds_per_epoch", "time", "log_tail", "work_dir", "command",
           "directory", "dir_name", "job_dir"}


def _normalise(obj):
    if isinstance(obj, dict):
        return {k: _normalise(v) for k, v in obj.items() if k not in IGNORED}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    return obj


def _same(a, b, path="") -> list[str]:
    """Paths where ``a`` and ``b`` differ (floats to 1e-9 relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _same(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _same(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        ok = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
        return [] if ok else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {str(a)[:60]} != {str(b)[:60]}"]


def _documents(store_dir: Path) -> tuple[dict, int]:
    """``{(uuid, index): [documents, large data loaded]}`` and the number of data-store documents."""
    store = get_store(store_dir=store_dir, connect=True)
    try:
        docs: dict = {}
        for d in store.query({}, load=True):
            docs.setdefault((d["uuid"], d["index"]), []).append(d)
        return docs, store.additional_stores["data"].count({})
    finally:
        store.close()


def _run(script: Path, inputs: Path, store: Path, work: Path, slow: float = 0.0, **popen) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(script), str(inputs), str(store), str(work), str(slow)],
                            env=env, cwd=script.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def _finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("SUMMARY "))
    return json.loads(line.split(" ", 1)[1])


@pytest.mark.slow
def test_kill_9_mid_campaign_then_rerun_equals_a_clean_run(tmp_path):
    script = tmp_path / "campaign.py"
    script.write_text(CAMPAIGN + MAIN)
    namespace: dict = {}
    exec(compile(CAMPAIGN, str(script), "exec"), namespace)  # the same flow, the same deterministic uuids
    inputs = tmp_path / "inputs"
    flow = namespace["make_flow"](inputs)
    uuids = [j.uuid for j in flow.jobs]
    n_jobs = len(uuids)
    assert n_jobs == 10  # campaign, 2 x (perturb, label), training set, train, 2 phonons, benchmark

    # 1. run, and kill -9 once some (not all) outputs are in the store
    killed_store = tmp_path / "store-killed"
    proc = _run(script, inputs, killed_store, tmp_path / "runs-killed", slow=3.0)
    stored = 0
    running_seen = 0
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if killed_store.exists():
                store = get_store(store_dir=killed_store, connect=True)
                stored = store.docs_store.count({"uuid": {"$in": uuids}})
                # what `status` counts as running: a live process's marker, one job at a time
                running_seen = max(running_seen, len(running_records(store, uuids)))
                store.close()
                if stored >= 2 and running_seen:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the campaign ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert running_seen == 1
    store = get_store(store_dir=killed_store, connect=True)
    assert running_records(store, uuids) == {}  # the killed run's marker is not running: its job is pending
    store.close()
    before, _ = _documents(killed_store)
    done_before = len([k for k in before if k[0] in uuids])
    assert 2 <= done_before < n_jobs, done_before
    print(f"killed with {done_before} of {n_jobs} outputs stored")

    # 2. the same campaign again on the same store: what was stored is reused, the rest runs
    resumed = _finish(_run(script, inputs, killed_store, tmp_path / "runs-killed"))
    assert resumed == {"done": n_jobs - done_before, "reused": done_before, "failed": 0, "skipped": 0}
    print(f"rerun after the kill: {resumed}")

    # 3. a clean run in another store
    clean = _finish(_run(script, inputs, tmp_path / "store-clean", tmp_path / "runs-clean"))
    assert clean == {"done": n_jobs, "reused": 0, "failed": 0, "skipped": 0}

    # 4. the same documents, each exactly once, and the same large data
    a, n_data_a = _documents(killed_store)
    b, n_data_b = _documents(tmp_path / "store-clean")
    assert set(a) == set(b) and {k[0] for k in a} == set(uuids)
    assert all(len(v) == 1 for v in a.values()) and all(len(v) == 1 for v in b.values())  # no duplicates
    assert n_data_a == n_data_b
    for key in a:
        diffs = _same(_normalise(a[key][0]), _normalise(b[key][0]), a[key][0]["name"])
        assert not diffs, diffs[:10]
    # a third run changes nothing
    again = _finish(_run(script, inputs, killed_store, tmp_path / "runs-killed"))
    assert again == {"done": 0, "reused": n_jobs, "failed": 0, "skipped": 0}
    assert _documents(killed_store)[0].keys() == a.keys()
