"""``screen_sample.py --mode fireworks``: the screening flow on FireWorks.

The flow (ScreeningMaker, default batched path) is converted and submitted to a LaunchPad on the
MongoDB wire-protocol test server (mongoeco); a ``gpu`` and a ``cpu`` worker process
(``python -m phonon_flows.fireworks``, as a cluster runs them) pull the Fireworks of their
category; the job store is MongoStore + GridFS on the same server. Measured: time to build and to
submit, Fireworks and jobs per material, materials per minute end to end, peak memory of each
process, FireWorks + store overhead as a share of the total (wall time of the run minus the time
the jobs spent computing), store documents and bytes per material (MongoStore and GridFS
separately), and that every Firework ran exactly once on a worker of its category.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from _mongoeco import mongoeco_server, sqlite_bytes

REPO = Path(__file__).resolve().parents[1]


def start_workers(folder: Path, lp_yaml: Path, env: dict, timeout: float, names=("gpu-1", "cpu-1")) -> list:
    from phonon_flows.fireworks import write_fworker

    procs = []
    for name in names:
        template = "my_fworker_gpu.yaml" if name.startswith("gpu") else "my_fworker_cpu.yaml"
        worker = write_fworker(REPO / template, name, folder)
        wdir = folder / f"run_{name}"
        wdir.mkdir(exist_ok=True)
        log = open(folder / f"{name}.log", "a")
        cmd = ["nice", "-n", "10", sys.executable, "-m", "phonon_flows.fireworks", "-l", str(lp_yaml), "-w",
               str(worker), "--sleep", "1", "--timeout", str(int(timeout)), "--dir", str(wdir)]
        procs.append((name, subprocess.Popen(cmd, cwd=wdir, env=env, stdout=log, stderr=subprocess.STDOUT)))
    return procs


def watch(procs: list, launchpad: Any, total: int, progress: bool = True) -> dict[str, float]:
    """Wait for the workers; peak RSS (MB) of each (with its children); progress lines."""
    import psutil

    peak = {name: 0.0 for name, _ in procs}
    last = None
    while any(p.poll() is None for _, p in procs):
        for name, p in procs:
            try:
                ps = psutil.Process(p.pid)
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                peak[name] = max(peak[name], rss / 2**20)
            except psutil.Error:
                pass
        done = launchpad.fireworks.count_documents({"state": {"$in": ["COMPLETED", "FIZZLED"]}})
        if progress and done != last:
            print(f"  fireworks: {done}/{total} finished", flush=True)
            last = done
        time.sleep(2)
    return peak


def run_fireworks(args, rows, model_path: Path, root: Path) -> dict[str, Any]:
    from screen_sample import first_build, log_event, read_inputs, screening_maker

    from phonon_flows.fireworks import flow_to_workflow, get_launchpad, rerun_campaign_fireworks, write_jobflow_config
    from phonon_flows.store import get_store

    n = len(rows)
    with mongoeco_server(root / "mongoeco") as uri:  # the server's SQLite file outlives it: a run can resume
        launchpad = get_launchpad(uri, "fireworks")
        store = get_store(mongo_uri=uri, database="jobs")
        rerun_ids: list[int] = []
        if args.resume:  # the workers were killed (out of time): `phonon-flows rerun <campaign> -l ... --lost-after`
            built = first_build(root)
            t_read, t_build, t_submit, n_jobs = (built["read_inputs_s"], built["build_flow_s"], built["submit_s"],
                                                 built["jobs"])
            rerun_ids = rerun_campaign_fireworks(launchpad, args.name, store=store, lost_after=0)
            print(f"resuming: {len(rerun_ids)} Firework(s) a killed worker left RUNNING back to READY", flush=True)
            log_event(root, "built", resume=True, rerun_fw_ids=rerun_ids)
        else:
            launchpad.reset("", require_password=False)
            t0 = time.perf_counter()
            structures, smats = read_inputs(rows)
            t_read = time.perf_counter() - t0
            t0 = time.perf_counter()
            flow = screening_maker(args.name, model_path, args).make(structures, supercell_matrices=smats)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            wf = flow_to_workflow(flow)
            launchpad.add_wf(wf)
            t_submit = time.perf_counter() - t0
            n_jobs = len(flow.jobs)
            log_event(root, "built", read_inputs_s=t_read, build_flow_s=t_build, submit_s=t_submit, jobs=n_jobs)
        n_fw = launchpad.fireworks.count_documents({})
        lp_yaml = root / "launchpad.yaml"
        lp_yaml.write_text(yaml.safe_dump({"host": uri, "uri_mode": True, "name": "fireworks", "logdir": None,
                                           "strm_lvl": "INFO"}))
        jf_yaml = write_jobflow_config(root / "jobflow.yaml", uri, database="jobs")
        env = dict(os.environ, JOBFLOW_CONFIG_FILE=str(jf_yaml), OMP_NUM_THREADS=str(args.threads),
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        print(f"submitted {n_fw} Fireworks for {n} materials; starting a gpu and a cpu worker", flush=True)
        t0 = time.perf_counter()
        procs = start_workers(root, lp_yaml, env, timeout=args.worker_timeout)
        peak = watch(procs, launchpad, n_fw, progress=not args.no_progress)
        t_run = time.perf_counter() - t0
        log_event(root, "end", run_s=t_run)
        workers = {"returncodes": {name: p.returncode for name, p in procs},
                   "peak_rss_mb": {**peak, "submitting_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
        result = fireworks_result(args, rows, root, launchpad, store, (t_read, t_build, t_submit, n_jobs), t_run,
                                  workers=workers, rerun_ids=rerun_ids)
        launchpad.connection.close()
    return result


def fireworks_result(args, rows, root: Path, launchpad: Any, store: Any, built: tuple, t_run: float,
                     workers: dict[str, Any] | None = None, rerun_ids: list[int] | tuple = ()) -> dict[str, Any]:
    """The report of the FireWorks campaign in ``root``, read from its LaunchPad and job store (on
    the running test server): Fireworks, launches, the job store's footprint, the campaign's status.
    ``built`` = (read, build, submit seconds, jobs); ``workers``: the workers' return codes and peak
    memory, known only to the process that watched them."""
    from screen_sample import (
        batch_timings, chunk_seconds, extrapolate, pack_timings, store_footprint, summed_run_seconds,
    )

    from phonon_flows.results import PhononResults
    from phonon_flows.runner import campaign_status

    t_read, t_build, t_submit, n_jobs = built
    n = len(rows)
    n_fw = launchpad.fireworks.count_documents({})
    store.connect()  # before any read of it (chunk_seconds reads the job documents' times)
    chunks = chunk_seconds(root, store, args.name)
    if len(chunks) > 1:  # stopped for lack of time and resumed: the computing time of every run, summed
        t_run = summed_run_seconds(chunks, t_run)

    fws = list(launchpad.fireworks.find({}, {"fw_id": 1, "name": 1, "state": 1, "spec._category": 1}))
    launches = list(launchpad.launches.find({}, {"fw_id": 1, "fworker": 1, "state": 1, "runtime_secs": 1}))
    per_fw: dict[int, list] = {}
    for la in launches:
        per_fw.setdefault(la["fw_id"], []).append(la)
    wrong_category = [fw["name"] for fw in fws for la in per_fw.get(fw["fw_id"], [])
                      if la["fworker"]["category"] != fw["spec"]["_category"]]
    job_seconds = sum(float(la.get("runtime_secs") or 0) for la in launches)
    packs = pack_timings(store)
    bt = batch_timings(packs=packs)
    res = PhononResults(store)
    t0 = time.perf_counter()
    frame = res.to_dataframe(campaign=args.name, failed=None)
    t_df = time.perf_counter() - t0
    (status,) = campaign_status(store, args.name)
    compute_s = bt.get("total_s", 0.0)
    result = {
        "read_inputs_s": t_read, "build_flow_s": t_build, "submit_s": t_submit, "run_s": t_run,
        "fireworks": n_fw, "fireworks_per_material": n_fw / n, "jobs": n_jobs,
        "fw_states": {s: sum(1 for fw in fws if fw["state"] == s) for s in {fw["state"] for fw in fws}},
        "launches": len(launches), "fireworks_run_more_than_once": sum(1 for v in per_fw.values() if len(v) > 1),
        "launches_on_a_worker_of_another_category": wrong_category,
        "worker_returncodes": workers["returncodes"] if workers else None,
        "peak_rss_mb": workers["peak_rss_mb"] if workers else None,
        "materials_per_minute": 60 * n / (t_read + t_build + t_submit + t_run),
        "launch_runtime_s_sum": job_seconds, "batch_job_compute_s": compute_s,
        "overhead_share_of_total": max(0.0, (t_run - compute_s) / t_run) if t_run else None,
        "overhead_per_material_s": max(0.0, t_run - compute_s) / n,
        "overhead_note": "wall time of the worker run minus the time the phonon jobs spent computing "
                         "(PhononBatchDoc timings: model load, phonopy, forces, document writes), over the "
                         "run's wall time: FireWorks (polling, launches, reservations) + jobflow + store",
        "phonon_docs": int(len(frame)), "failed_docs": int(frame["failed"].sum()) if len(frame) else 0,
        "to_dataframe_s": t_df, "status_counts": status.counts, "status_by_stage": status.by_stage,
        "failures": status.failures, "store": store_footprint(store, n), "batch_timings_s": bt,
        "pack_timings_s": packs,
        "server_sqlite_bytes": sqlite_bytes(root / "mongoeco"),
        "extrapolation": extrapolate(rows, t_read + t_build + t_submit + t_run),
        "runs": chunks, "fireworks_rerun_after_a_kill": rerun_ids,
    }
    store.close()
    return result


def report_fireworks(args, rows, root: Path) -> dict[str, Any]:
    """``--report-only`` for ``--mode fireworks``: the report of a run whose workers finished but
    whose own report step did not, read back from its work folder (the test server's SQLite file
    and ``chunks.jsonl``). The workers' peak memory and return codes are not known afterwards."""
    from screen_sample import first_build, read_events

    from phonon_flows.fireworks import get_launchpad
    from phonon_flows.store import get_store

    built = first_build(root)
    ends = [e for e in read_events(root) if e["event"] == "end"]
    if not ends:
        raise SystemExit(f"{root}: the FireWorks run has no end (its workers did not finish): use --resume")
    with mongoeco_server(root / "mongoeco") as uri:
        launchpad = get_launchpad(uri, "fireworks")
        store = get_store(mongo_uri=uri, database="jobs")
        result = fireworks_result(args, rows, root, launchpad, store,
                                  (built["read_inputs_s"], built["build_flow_s"], built["submit_s"], built["jobs"]),
                                  ends[-1]["run_s"])
        launchpad.connection.close()
    result["note"] = ("read back from the work folder after the run (--report-only): the workers' peak memory and "
                      "return codes were not recorded")
    return result
