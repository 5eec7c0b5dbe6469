#!/usr/bin/env python
"""Screen phonondb's sample-1000 crystals with one MACE model of the recipe's architecture, the
ways a user would, and measure it.

Modes (``--mode``):

- ``local``: ``ScreeningMaker`` (the default batched path) run by ``run_campaign`` on the
  embedded store (what ``phonon-flows run --screen`` does);
- ``fireworks``: the same flow converted to a FireWorks workflow, submitted to a LaunchPad on the
  MongoDB wire-protocol test server (mongoeco), run by a ``gpu`` and a ``cpu`` worker process
  (``python -m phonon_flows.fireworks``), job store MongoStore + GridFS on the same server;
- ``faults``: ``local`` with 5 % of the inputs bad in the ways the input checks know (unreadable
  file, overlapping atoms, an element the model does not know) and 2 % of the materials failing at
  run time (NaN forces from the model, injected by wrapping the engine in this process) plus one
  run killed half way (the process running the campaign is killed with SIGKILL while a pack is
  being computed); then ``status`` and a rerun: 0 materials lost or duplicated, every failure
  named.

The model is a seeded, untrained ``ScaleShiftMACE`` with the recipe's architecture (2
interactions, correlation 3, hidden irreps 64x0e + 64x1o, r_max 6 Å, float64) for every element of
the sample: its cost per force call is the recipe model's, its phonons mean NOTHING (no training).
The supercells are phonondb's own (``DIM`` of each entry: 20 to 306 atoms).

``--n N`` screens a seeded random subset of N materials (the timings extrapolate to all 1,000 by
the sum over materials of displaced supercells x atoms, from ``index.json``). Writes JSON to
``--out``. Run ``python benchmarks/screen_sample.py --mode local --n 50``.

A run longer than a session's machine lasts is done in parts: ``--part K/P`` screens part K of P
disjoint parts of about equal cost, each its own campaign and store, and ``--combine A.json B.json
... --out ALL.json`` sums the parts' reports into one (refusing parts that overlap or repeat).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

DATA = Path(os.environ.get("PHONON_FLOWS_PHONONDB", REPO.parent / "shared" / "data" / "phonondb"))
RECIPE_IRREPS = "64x0e + 64x1o"
RECIPE_R_MAX = 6.0
SEED = 14
NAN_ELEMENT_MARK = "__nan__"


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def sample_entries(n: int | None, seed: int = SEED, pick: str = "random") -> list[dict[str, Any]]:
    """index.json rows of sample-1000 (all, or a seeded random subset of ``n``, or with
    ``pick="cheapest"`` the ``n`` of least force-call cost, for smoke runs), with their path."""
    index = {row["file"]: row for row in json.loads((DATA / "index.json").read_text())}
    files = sorted(p.name for p in (DATA / "sample-1000").glob("*.tar.lzma"))
    rows = [dict(index[f], path=str(DATA / "sample-1000" / f)) for f in files if f in index]
    if n is not None and n < len(rows) and pick == "cheapest":
        return sorted(rows, key=cost_proxy)[:n]
    if n is not None and n < len(rows):
        rng = np.random.default_rng(seed)
        rows = [rows[i] for i in sorted(rng.choice(len(rows), size=n, replace=False))]
    return rows


def split_part(rows: list[dict[str, Any]], part: int, parts: int) -> list[dict[str, Any]]:
    """Part ``part`` (1-based) of ``parts`` disjoint parts of ``rows`` of about equal force-call cost:
    the rows in order of cost, dealt out in turn, then back in their own order. For a campaign that
    does not fit one machine's session: each part is its own campaign and store."""
    if not 1 <= part <= parts:
        raise ValueError(f"part {part} of {parts}: the part must be between 1 and {parts}")
    by_cost = sorted(range(len(rows)), key=lambda i: (cost_proxy(rows[i]), rows[i]["mp_id"]))
    mine = {i for k, i in enumerate(by_cost) if k % parts == part - 1}
    return [row for i, row in enumerate(rows) if i in mine]


def parse_part(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4)."""
    try:
        k, p = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--part {text!r}: write it as K/P, e.g. 1/4") from None
    if not 1 <= k <= p:
        raise argparse.ArgumentTypeError(f"--part {text!r}: K must be between 1 and P")
    return k, p


#: numbers of a part's result that add up over the parts
_SUMMED_RESULT_KEYS = ("phonon_docs", "failed_docs", "stable", "jobs", "read_inputs_s", "build_flow_s", "submit_s", "run_s",
                       "fireworks", "launches", "fireworks_run_more_than_once", "launch_runtime_s_sum",
                       "batch_job_compute_s", "to_dataframe_s")


def _sum_leaves(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Nested dicts of counts added up leaf by leaf (a key missing in one counts as 0)."""
    out: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, dict):
                out[key] = _sum_leaves([out.get(key, {}), value])
            else:
                out[key] = out.get(key, 0) + value
    return out


def combine_parts(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from the reports of the parts of one campaign (``--part K/P``, each its own
    campaign and store): materials and documents summed, wall time summed, store bytes per material
    over all of them, the largest peak memory. Refuses parts that overlap, repeat, or mix modes,
    models or sizes."""
    if not reports:
        raise ValueError("no part reports to combine")
    keys = {(r["mode"], r["model"]["file"], r["model"]["dtype"], r["part"]["parts"], r["part"]["of_n"]) for r in reports}
    if len(keys) != 1:
        raise ValueError(f"the part reports are not parts of one run (mode, model, dtype, parts, n differ): {sorted(keys)}")
    mode, _, _, parts, of_n = keys.pop()
    numbers = sorted(r["part"]["part"] for r in reports)
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"part reports repeat a part: {numbers}")
    materials = [m for r in reports for m in r["materials"]]
    if len(set(materials)) != len(materials):
        raise ValueError("the parts share materials: they were not split by the same --part P")
    results = [r["result"] for r in reports]
    n = len(materials)
    wall = sum(r["wall_s"] for r in reports)
    store_keys = ("docs_documents", "docs_bytes", "data_documents", "data_chunks", "data_bytes")
    store = {k: int(sum(res["store"].get(k) or 0 for res in results)) for k in store_keys}
    store.update({f"{k}_per_material": store[k] / max(1, n) for k in store_keys})
    store["data_store"], store["docs_store"] = results[0]["store"]["data_store"], results[0]["store"]["docs_store"]
    timings: dict[str, float] = {}
    for res in results:
        for k, v in res.get("batch_timings_s", {}).items():
            if k != "forces_share_of_batch_jobs":
                timings[k] = timings.get(k, 0.0) + v
    if timings.get("total_s"):
        timings["forces_share_of_batch_jobs"] = timings.get("forces_s", 0.0) / timings["total_s"]
    combined = dict(reports[0], command=[r["command"] for r in reports], n_materials=n, materials=materials,
                    campaign=[r["campaign"] for r in reports],
                    phonondb_displacements=int(sum(r["phonondb_displacements"] for r in reports)),
                    supercell_atoms={"min": min(r["supercell_atoms"]["min"] for r in reports),
                                     "max": max(r["supercell_atoms"]["max"] for r in reports)},
                    wall_s=wall, materials_per_minute_end_to_end=60 * n / wall,
                    machine=[r["machine"] for r in reports])
    combined["part"] = {"parts": parts, "of_n": of_n, "parts_done": numbers, "complete": numbers == list(range(1, parts + 1)) and n == of_n,
                        "note": "each part its own campaign and store, run one after another (a session's work folder "
                                "does not outlive it); wall_s is the sum of the parts' wall times"}
    summed = {key: sum(res[key] for res in results) for key in _SUMMED_RESULT_KEYS if all(key in res for res in results)}
    stage_s = sum(summed.get(k, 0.0) for k in ("read_inputs_s", "build_flow_s", "submit_s", "run_s"))
    combined["result"] = {
        **summed, "jobs_per_material": summed.get("jobs", 0) / max(1, n),
        "materials_per_minute": 60 * n / stage_s if stage_s else None,
        "store": store, "batch_timings_s": timings,
        "status_counts": _sum_leaves([res.get("status_counts", {}) for res in results]),
        "status_by_stage": _sum_leaves([res.get("status_by_stage", {}) for res in results]),
        "failures": [f for res in results for f in res.get("failures", [])],
        "pack_timings_s": [dict(pack, part=r["part"]["part"]) for r in reports for pack in r["result"].get("pack_timings_s", [])],
        "parts": [{"part": r["part"]["part"], "n_materials": r["n_materials"], "wall_s": r["wall_s"],
                   "phonon_docs": r["result"].get("phonon_docs"), "loadavg_at_start": r["machine"]["loadavg"]}
                  for r in sorted(reports, key=lambda r: r["part"]["part"])],
    }
    for key in ("peak_rss", "peak_rss_mb"):  # local: this process + children; FireWorks: each worker
        known = [(r["part"]["part"], r["result"][key]) for r in reports if r["result"].get(key)]
        if known:  # a part reported with --report-only has no record of its workers' memory
            names = sorted({name for _, peak in known for name in peak})
            combined["result"][key] = {name: max(peak.get(name, 0.0) for _, peak in known) for name in names}
            combined["result"][f"{key}_of_parts"] = [k for k, _ in known]
    if mode == "fireworks":
        result = combined["result"]
        result["fireworks_per_material"] = summed.get("fireworks", 0) / max(1, n)
        result["fw_states"] = _sum_leaves([res.get("fw_states", {}) for res in results])
        result["launches_on_a_worker_of_another_category"] = [
            name for res in results for name in res.get("launches_on_a_worker_of_another_category", [])]
        result["worker_returncodes"] = [res.get("worker_returncodes") for res in results]
        run_s, compute_s = summed.get("run_s", 0.0), summed.get("batch_job_compute_s", 0.0)
        result["overhead_share_of_total"] = max(0.0, (run_s - compute_s) / run_s) if run_s else None
        result["overhead_per_material_s"] = max(0.0, run_s - compute_s) / max(1, n)
        result["server_sqlite_bytes_largest_part"] = max(res.get("server_sqlite_bytes") or 0 for res in results)
    combined["mode"] = mode
    return combined


def cost_proxy(row: dict[str, Any]) -> float:
    """Force-call cost of a material ~ displaced supercells x atoms per supercell."""
    return float(row["displacements"]) * float(row["atoms_supercell"])


def read_inputs(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[list[int]]]]:
    """material id -> primitive cell (pymatgen), material id -> phonondb's supercell (its DIM on the
    unit cell) written on that primitive cell, in phonopy's convention: the screening works on
    primitive cells. (Before 2026-12-05 the matrix was written transposed: a supercell of the same
    size but, where that matrix is not symmetric, of another shape than phonondb's.)"""
    from phonon_flows.core.phonondb import read_phonondb_entry
    from phonon_flows.core.phonons import to_structure
    from phonon_flows.core.structures import primitive_cell

    structures, smats = {}, {}
    for row in rows:
        entry = read_phonondb_entry(row["path"])
        mid = row["mp_id"]
        unit = to_structure(entry.unitcell)
        prim = primitive_cell(unit)
        s = np.asarray(entry.supercell_matrix, dtype=float)
        # phonopy's convention (columns): the supercell's lattice (rows) is M.T @ lattice, so the
        # same supercell S.T @ L_unit = S'.T @ L_prim needs S' = (S.T @ L_unit @ L_prim^-1).T
        sp = (s.T @ unit.lattice.matrix @ np.linalg.inv(prim.lattice.matrix)).T
        if np.abs(sp - np.rint(sp)).max() > 1e-4:
            raise ValueError(f"{mid}: phonondb's supercell is not a supercell of the primitive cell")
        sp = np.rint(sp).astype(int)
        assert np.allclose(sp.T @ prim.lattice.matrix, s.T @ unit.lattice.matrix, atol=1e-6), mid
        assert round(abs(np.linalg.det(sp))) * len(prim) == row["atoms_supercell"], mid
        structures[mid] = prim
        smats[mid] = sp.tolist()
    return structures, smats


def sample_elements() -> list[str]:
    rows = json.loads((DATA / "index.json").read_text())
    files = {p.name for p in (DATA / "sample-1000").glob("*.tar.lzma")}
    return sorted({el for r in rows if r["file"] in files for el in r["elements"]})


def recipe_model(path: Path, hidden_irreps: str = RECIPE_IRREPS, r_max: float = RECIPE_R_MAX) -> Path:
    """The seeded model for all elements of sample-1000: the recipe's architecture, or with other
    hidden irreps and cutoff (a cheaper model for runs that measure bookkeeping, not speed)."""
    from make_model import build_model

    path = Path(path)
    if not path.is_file():
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        model = build_model(elements=sample_elements(), r_max=r_max, hidden_irreps=hidden_irreps)
        tmp = path.with_suffix(".tmp")
        torch.save(model, tmp)
        tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------
def store_footprint(store: Any, n_materials: int) -> dict[str, Any]:
    """Documents and BSON bytes in the job store's docs store and data store (MongoStore: its
    collection; GridFS: files + chunks), total and per material."""
    import bson

    out: dict[str, Any] = {}
    docs = list(store.docs_store.query())
    out["docs_documents"] = len(docs)
    out["docs_bytes"] = int(sum(len(bson.encode(d)) for d in docs))
    data = store.additional_stores["data"]
    kind = type(data).__name__
    if kind == "GridFSStore":
        files, chunks = data._files_collection, data._chunks_collection
        out["data_documents"] = files.count_documents({})
        out["data_chunks"] = chunks.count_documents({})
        out["data_bytes"] = int(sum(f.get("length", 0) for f in files.find({}, {"length": 1})))
    else:
        blobs = list(data.query())
        out["data_documents"] = len(blobs)
        out["data_bytes"] = int(sum(len(bson.encode(d)) for d in blobs))
    out["data_store"] = kind
    out["docs_store"] = type(store.docs_store).__name__
    n = max(1, n_materials)
    for k in ("docs_documents", "docs_bytes", "data_documents", "data_bytes"):
        if out.get(k) is not None:
            out[f"{k}_per_material"] = out[k] / n
    return out


def peak_rss_mb() -> dict[str, float]:
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"this_process_mb": self_mb, "largest_child_mb": child_mb}


def extrapolate(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    all_rows = sample_entries(None)
    done, total = sum(cost_proxy(r) for r in rows), sum(cost_proxy(r) for r in all_rows)
    return {"proxy": "sum over materials of displaced supercells x supercell atoms (index.json)",
            "proxy_subset": done, "proxy_all_1000": total,
            "estimated_seconds_all_1000": seconds * total / done if done else None,
            "estimated_hours_all_1000": seconds * total / done / 3600 if done else None}


def batch_timings(store: Any = None, packs: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """Seconds per stage summed over the packs (``packs`` from :func:`pack_timings`, else read from
    ``store``), and the force calls' share of them."""
    out: dict[str, float] = {}
    for pack in pack_timings(store) if packs is None else packs:
        for k, v in pack.items():
            if k not in ("completed_at", "materials"):
                out[k] = out.get(k, 0.0) + float(v)
    if out.get("total_s"):
        out["forces_share_of_batch_jobs"] = out.get("forces_s", 0.0) / out["total_s"]
    return out


def pack_timings(store: Any) -> list[dict[str, Any]]:
    """Each pack's (PhononBatchDoc's) seconds per stage, in the order the packs finished: whether a
    stage (the store writes) grows as the store fills."""
    from phonon_flows.schemas.batch import PHONON_BATCH_KIND

    docs = store.docs_store.query({"output.kind": PHONON_BATCH_KIND},
                                  properties=["output.timings", "output.material_ids", "completed_at"])
    rows = [{"completed_at": str(d.get("completed_at")), "materials": len(d["output"].get("material_ids") or []),
             **{k: round(float(v), 3) for k, v in (d["output"].get("timings") or {}).items()}} for d in docs]
    return sorted(rows, key=lambda r: r["completed_at"])


def without_folder(text: str, folder: Path) -> str:
    """``text`` with the run's own work folder written as ``WORK`` (in the command and in error
    messages), so that a report names no path of the machine that ran it."""
    for name in sorted({str(folder), str(folder.resolve())}, key=len, reverse=True):
        text = text.replace(name, "WORK")
    return text


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "loadavg": list(os.getloadavg()), "nice": os.nice(0)}


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------
def screening_maker(name: str, model_path: Path, args) -> Any:
    from make_model import sha256

    from phonon_flows.flows import ScreeningMaker

    return ScreeningMaker(
        name=name, model=sha256(model_path), model_elements=sample_elements(), relax=False,
        batch_size=args.batch_size, postprocess_workers=args.workers,
        engine_kwargs={"model_path": str(model_path), "device": args.device, "default_dtype": args.dtype},
    )


def partial_report(args, rows, root: Path, store: Any = None) -> dict[str, Any]:
    """What a run that was stopped (out of time) had done, read back from its store: PhononDocs
    stored, the measured rate (from the campaign record's time to the last PhononDoc's), and what
    remains, extrapolated by the cost proxy."""
    from datetime import datetime

    from phonon_flows.runner import campaign_docs, campaign_status
    from phonon_flows.store import get_store

    store = store or get_store(store_dir=root / "store")
    store.connect()
    camp = campaign_docs(store, args.name)[0]
    t_start = datetime.fromisoformat(camp["_completed_at"])
    docs = list(store.docs_store.query({"output.@class": "PhononDoc", "metadata.phonon_flows.campaign": args.name},
                                       properties=["output.material_id", "output.failed", "completed_at"]))
    done_ids = {d["output"]["material_id"] for d in docs}
    last = max((datetime.fromisoformat(d["completed_at"]) for d in docs), default=t_start)
    seconds = (last - t_start).total_seconds()
    chunks = chunk_seconds(root, store, args.name)
    if len(chunks) > 1:  # several runs (resumed): the sum of their computing time, not the calendar time
        seconds = sum(c["seconds"] for c in chunks)
    done_rows = [r for r in rows if r["mp_id"] in done_ids]
    (status,) = campaign_status(store, args.name)
    out = {
        "stopped_early": True, "phonon_docs": len(docs), "failed_docs": sum(bool(d["output"].get("failed")) for d in docs),
        "materials_done": sorted(done_ids), "materials_remaining": len(rows) - len(done_ids),
        "seconds_first_job_to_last_doc": seconds,
        "materials_per_minute": 60 * len(docs) / seconds if seconds > 0 else None,
        "status_counts": status.counts, "store": store_footprint(store, max(1, len(docs))),
        "extrapolation": extrapolate(done_rows, seconds) if done_rows else None, "runs": chunks,
    }
    out["store"]["note"] = "per material stored so far"
    return out


def log_event(root: Path, event: str, **fields: Any) -> None:
    """One line of ``<work>/chunks.jsonl``: when each run of the campaign in this work folder
    started, was built and ended (a run killed for lack of time has no end)."""
    from datetime import datetime

    line = dict(event=event, t=datetime.now().isoformat(), pid=os.getpid(), loadavg=list(os.getloadavg()), **fields)
    with (root / "chunks.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")


def read_events(root: Path) -> list[dict[str, Any]]:
    """The lines of ``<work>/chunks.jsonl`` (none before the first run)."""
    path = root / "chunks.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def first_build(root: Path) -> dict[str, Any]:
    """The ``built`` event of the campaign's first run (its read, build and submit times)."""
    return next(e for e in read_events(root) if e["event"] == "built" and not e.get("resume"))


def summed_run_seconds(chunks: list[dict[str, Any]], t_run: float) -> float:
    """This run's seconds plus the computing seconds of the runs before it (a resumed campaign)."""
    return sum(c["seconds"] for c in chunks[:-1]) + t_run


def chunk_seconds(root: Path, store: Any, campaign: str) -> list[dict[str, Any]]:
    """The runs of the campaign in ``root`` (``chunks.jsonl``), each with the seconds it computed:
    start to end, or for a run that was killed, start to the last job document it stored (the pack
    it was computing when killed was lost and is counted in the run that redid it)."""
    from datetime import datetime

    events = read_events(root)
    starts = [e for e in events if e["event"] == "start"]
    ends = {e["pid"]: e for e in events if e["event"] == "end"}
    done = sorted(datetime.fromisoformat(d["completed_at"]) for d in store.docs_store.query(
        {"metadata.phonon_flows.campaign": campaign}, properties=["completed_at"]) if d.get("completed_at"))
    out = []
    for i, s in enumerate(starts):
        t0 = datetime.fromisoformat(s["t"])
        t_next = datetime.fromisoformat(starts[i + 1]["t"]) if i + 1 < len(starts) else None
        if s["pid"] in ends and (t_next is None or datetime.fromisoformat(ends[s["pid"]]["t"]) <= t_next):
            t1, how = datetime.fromisoformat(ends[s["pid"]]["t"]), "ended"
        else:
            inside = [t for t in done if t >= t0 and (t_next is None or t < t_next)]
            t1, how = (inside[-1] if inside else t0), "killed: to its last stored document"
        n_docs = sum(1 for t in done if t0 <= t <= t1)
        out.append({"start": s["t"], "seconds": (t1 - t0).total_seconds(), "how": how, "job_docs": n_docs,
                    "resume": s.get("resume", False), "loadavg_at_start": s["loadavg"]})
    return out


def run_local(args, rows, model_path: Path, root: Path) -> dict[str, Any]:
    from phonon_flows.results import PhononResults
    from phonon_flows.runner import campaign_status, load_saved_flow, run_campaign
    from phonon_flows.store import get_store

    store = get_store(store_dir=root / "store")
    t0 = time.perf_counter()
    if args.resume:  # what `phonon-flows rerun <campaign>` does: the saved flow again, finished jobs reused
        flow = load_saved_flow(args.name, root / "runs")
        t_read = 0.0
    else:
        structures, smats = read_inputs(rows)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        flow = screening_maker(args.name, model_path, args).make(structures, supercell_matrices=smats)
    t_build = time.perf_counter() - t0
    log_event(root, "built", read_inputs_s=t_read, build_flow_s=t_build, resume=args.resume)
    t0 = time.perf_counter()
    summary = run_campaign(flow, store, progress=not args.no_progress, work_dir=root / "runs")
    t_run = time.perf_counter() - t0
    log_event(root, "end", run_s=t_run)
    chunks = chunk_seconds(root, store, args.name)
    if len(chunks) > 1:  # a run stopped for lack of time and resumed: its runs' computing time, summed
        first = first_build(root)
        t_read, t_build = first["read_inputs_s"], first["build_flow_s"]
        t_run = summed_run_seconds(chunks, t_run)
    store.connect()
    res = PhononResults(store)
    t0 = time.perf_counter()
    frame = res.to_dataframe(campaign=args.name, failed=None)
    t_df = time.perf_counter() - t0
    (status,) = campaign_status(store, args.name)
    packs = pack_timings(store)
    n = len(rows)
    return {
        "read_inputs_s": t_read, "build_flow_s": t_build, "run_s": t_run,
        "jobs": len(flow.jobs), "jobs_per_material": len(flow.jobs) / n,
        "materials_per_minute": 60 * n / (t_read + t_build + t_run),
        "phonon_docs": int(len(frame)), "failed_docs": int(frame["failed"].sum()) if len(frame) else 0,
        "stable": int(frame["dynamically_stable"].fillna(False).sum()) if len(frame) else 0,
        "to_dataframe_s": t_df, "status_counts": status.counts, "status_by_stage": status.by_stage,
        "failures": status.failures, "runner_counts": summary.counts,
        "store": store_footprint(store, n), "batch_timings_s": batch_timings(packs=packs), "pack_timings_s": packs,
        "peak_rss": peak_rss_mb(), "extrapolation": extrapolate(rows, t_read + t_build + t_run),
        "runs": chunks,
    }


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("local", "fireworks", "faults"), default="local")
    p.add_argument("--n", type=int, default=50, help="materials (a seeded random subset; 1000 = all)")
    p.add_argument("--pick", choices=("random", "cheapest"), default="random",
                   help="which materials: a seeded random subset (default) or the cheapest (smoke runs)")
    p.add_argument("--batch-size", type=int, default=32, help="materials per phonon job")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="the model's device: cpu (default), cuda or auto")
    p.add_argument("--workers", type=int, default=0,
                   help="ScreeningMaker(postprocess_workers=N): phonopy's work in N processes beside the model "
                        "(on a GPU host: cpus - 1); default 0")
    p.add_argument("--name", default=None, help="campaign name (default sample-<mode>-<n>)")
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--model", default=None,
                   help="seeded model file (built there if missing; default bench_output/recipe_seeded_mace.model)")
    p.add_argument("--hidden-irreps", default=RECIPE_IRREPS,
                   help=f"the model's hidden irreps (default the recipe's {RECIPE_IRREPS!r}; e.g. '8x0e + 8x1o' for a "
                        "cheap model in a run that checks bookkeeping, not speed)")
    p.add_argument("--r-max", type=float, default=RECIPE_R_MAX, help=f"the model's cutoff, Å (default {RECIPE_R_MAX})")
    p.add_argument("--out", default=None, help="JSON (default benchmarks/results/screen_<mode>_<n>.json)")
    p.add_argument("--worker-timeout", type=float, default=3 * 3600, help="FireWorks workers stop after this (s)")
    p.add_argument("--bad-share", type=float, default=0.05, help="faults: share of bad inputs")
    p.add_argument("--nan-share", type=float, default=0.02, help="faults: share of materials with NaN forces")
    p.add_argument("--kill-after-docs", type=int, default=3,
                   help="faults: kill the first run once this many PhononDocs are stored")
    p.add_argument("--resume", action="store_true",
                   help="local or fireworks: go on with the campaign in --work, stopped for lack of time (`phonon-flows "
                        "rerun`; on FireWorks the killed workers' Fireworks back to READY and new workers): finished "
                        "jobs are reused and the report sums the computing time of every run (chunks.jsonl)")
    p.add_argument("--report-only", action="store_true",
                   help="local: report what the run in --work stored (a run stopped for lack of time); fireworks: "
                        "report a finished run from its --work folder (its workers done, its report step not)")
    p.add_argument("--part", type=parse_part, default=None, metavar="K/P",
                   help="local or fireworks: screen only part K of P disjoint parts of the --n materials, of about "
                        "equal cost, as its own campaign (a run longer than one session, done in parts)")
    p.add_argument("--combine", nargs="+", default=None, metavar="PART_JSON",
                   help="write one report (--out) from the JSON reports of the parts of one run, and stop")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.combine:
        if not args.out:
            p.error("--combine needs --out")
        combined = combine_parts([json.loads(Path(f).read_text()) for f in args.combine])
        Path(args.out).write_text(json.dumps(combined, indent=2, default=str))
        print(json.dumps({k: combined[k] for k in ("mode", "n_materials", "wall_s", "materials_per_minute_end_to_end")}
                         | {"complete": combined["part"]["complete"]}))
        print(f"written {args.out}")
        return combined
    if args.part and args.mode == "faults":
        p.error("--part needs --mode local or fireworks")
    tag = f"-part{args.part[0]}of{args.part[1]}" if args.part else ""
    args.name = args.name or f"sample-{args.mode}-{args.n}{tag}"
    if args.resume and (args.mode == "faults" or not args.work):
        p.error("--resume needs --mode local or fireworks and the --work folder of the run to resume")

    import torch

    torch.set_num_threads(args.threads)
    rows = sample_entries(args.n, pick=args.pick)
    of_n = len(rows)
    if args.part:
        rows = split_part(rows, *args.part)
    root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix=f"screen_{args.mode}_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    recipe = args.hidden_irreps == RECIPE_IRREPS and args.r_max == RECIPE_R_MAX
    if args.model is None:
        tag = "recipe" if recipe else f"{args.hidden_irreps.replace(' ', '').replace('+', '_')}_r{args.r_max:g}"
        args.model = str(REPO / "bench_output" / f"{tag}_seeded_mace.model")
    model_path = recipe_model(Path(args.model), args.hidden_irreps, args.r_max)
    model_s = time.perf_counter() - t0
    n_params = int(sum(p.numel() for p in torch.load(str(model_path), weights_only=False).parameters()))
    print(f"screening {len(rows)} phonondb materials ({args.mode}), model {model_path.name} "
          f"({n_params} parameters, seeded: phonons meaningless), work folder {root}", flush=True)
    if not args.report_only:
        log_event(root, "start", resume=args.resume, argv=argv if argv is not None else sys.argv[1:],
                  threads=args.threads, dtype=args.dtype)
    t0 = time.perf_counter()
    if args.report_only and args.mode == "fireworks":
        from screen_sample_fireworks import report_fireworks

        result = report_fireworks(args, rows, root)
    elif args.report_only:
        result = partial_report(args, rows, root)
    elif args.mode == "local":
        result = run_local(args, rows, model_path, root)
    elif args.mode == "fireworks":
        from screen_sample_fireworks import run_fireworks

        result = run_fireworks(args, rows, model_path, root)
    else:
        from screen_sample_faults import run_faults

        result = run_faults(args, rows, model_path, root)
    wall = time.perf_counter() - t0
    if args.resume:  # every run of the campaign, not only this last one
        wall = result["read_inputs_s"] + result["build_flow_s"] + result.get("submit_s", 0.0) + result["run_s"]
        result["note"] = "resumed: wall_s is the computing time of all runs summed (result.runs)"
    if args.report_only and args.mode == "fireworks":  # the run's own time, not the time to read it back
        wall = result["read_inputs_s"] + result["build_flow_s"] + result["submit_s"] + result["run_s"]
    elif args.report_only:  # the run's own time, not the time to read its store back
        wall = result["seconds_first_job_to_last_doc"] * len(rows) / max(1, result["phonon_docs"])
        result["note"] = ("stopped before the end: wall_s and materials_per_minute_end_to_end are the measured rate "
                          "over the materials stored, scaled to the n asked")
    report = {
        "benchmark": "screen_sample", "mode": args.mode,
        "command": "python benchmarks/screen_sample.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_materials": len(rows), "campaign": args.name,
        **({"part": {"part": args.part[0], "parts": args.part[1], "of_n": of_n}} if args.part else {}),
        "materials": [r["mp_id"] for r in rows],
        "supercell_atoms": {"min": min(r["atoms_supercell"] for r in rows),
                            "max": max(r["atoms_supercell"] for r in rows),
                            "mean": float(np.mean([r["atoms_supercell"] for r in rows]))},
        "phonondb_displacements": int(sum(r["displacements"] for r in rows)),
        "model": {"file": model_path.name, "parameters": n_params, "hidden_irreps": args.hidden_irreps,
                  "r_max_A": args.r_max, "recipe_architecture": recipe, "num_interactions": 2, "correlation": 3,
                  "dtype": args.dtype,
                  "elements": len(sample_elements()), "trained": False, "build_s": model_s,
                  "note": "seeded weights: the phonons computed with it mean nothing; " + (
                      "the timings are the recipe model's" if recipe else
                      "NOT the recipe's architecture: a cheaper model, the timings are not the recipe model's")},
        "wall_s": wall, "materials_per_minute_end_to_end": 60 * len(rows) / wall,
        "machine": machine(), "result": result,
    }
    out = Path(args.out) if args.out else HERE / "results" / f"screen_{args.mode}_{of_n}{tag.replace('-', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(without_folder(json.dumps(report, indent=2, default=str), root))
    print(json.dumps({k: report[k] for k in ("mode", "n_materials", "wall_s", "materials_per_minute_end_to_end")}))
    print(f"written {out}")
    return report


if __name__ == "__main__":
    main()
