"""Run phonon_flows Flows on FireWorks, with GPU and CPU queues.

Every Firework carries a ``_category``: ``gpu`` for MACE training and MLIP phonons, ``cpu`` for DFT
and reference-engine labelling (the makers tag their jobs with
:func:`phonon_flows.makers.base.set_category`; untagged jobs default to ``cpu``). A rocket launcher
started with ``my_fworker_gpu.yaml`` (``category: gpu``) only pulls GPU Fireworks, one with
``my_fworker_cpu.yaml`` only CPU Fireworks.

Where results go: jobflow's ``JobFiretask`` writes to the ``JOB_STORE`` of the jobflow settings on
the machine that runs the job (``~/.jobflow.yaml`` or the file named by ``JOBFLOW_CONFIG_FILE``),
unless a store is given to :func:`flow_to_workflow` -- which then travels, URI included, inside
every Firework. :func:`jobflow_config` / :func:`write_jobflow_config` write that file for a MongoDB
+ GridFS store like :func:`phonon_flows.store.get_store` makes.

Dynamically created jobs (``Response(replace=...)``) inherit their parent's ``manager_config``
(jobflow's ``pass_manager_config``), so they keep its category.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonon_flows.errors import InputError
from phonon_flows.makers.base import CATEGORIES
from phonon_flows.settings import get_settings
from phonon_flows.store import DATA_STORE_NAME

if TYPE_CHECKING:
    from fireworks import LaunchPad, Workflow
    from jobflow import Flow, Job, JobStore

DEFAULT_CATEGORY = "cpu"


def flow_to_workflow(
    flow: "Flow | Job | list[Job]",
    store: "JobStore | None" = None,
    categories: bool = True,
    default_category: str = DEFAULT_CATEGORY,
    **kwargs: Any,
) -> "Workflow":
    """A FireWorks Workflow for a jobflow Flow, every Firework tagged with a category.

    ``store=None`` (recommended) lets each worker use its own jobflow ``JOB_STORE``.
    Untagged jobs get ``default_category`` in their ``config.manager_config`` (so the jobs they
    create at run time inherit it). ``categories=False`` leaves jobs and specs as they are. Other keyword arguments go to
    :func:`jobflow.managers.fireworks.flow_to_workflow` (``name``, ``metadata``, ...).
    """
    from jobflow.managers.fireworks import flow_to_workflow as jobflow_flow_to_workflow

    from jobflow.core.flow import get_flow

    if default_category not in CATEGORIES:
        raise InputError(f"default_category must be one of {CATEGORIES}, not {default_category!r}")
    flow = get_flow(flow, allow_external_references=kwargs.get("allow_external_references", False))
    if categories:
        # Tag the jobs themselves, not only their Fireworks: jobs a job creates at run time
        # (Response replace/addition/detour) get their parent's manager_config, so they land in
        # the same queue instead of waiting, untagged, for a worker that never comes.
        for job, _ in flow.iterflow():
            if not job.config.manager_config.get("_category"):
                job.config.manager_config = {**job.config.manager_config, "_category": default_category}
    wf = jobflow_flow_to_workflow(flow, store=store, **kwargs)
    if categories:
        for fw in wf.fws:
            category = fw.spec.get("_category")
            if category is None:
                fw.spec["_category"] = default_category
            elif category not in CATEGORIES:
                raise InputError(
                    f"job {fw.name!r} has FireWorks category {category!r}; phonon_flows uses {CATEGORIES}"
                )
    return wf


def get_launchpad(uri: str, name: str | None = None, **kwargs: Any) -> "LaunchPad":
    """``LaunchPad(host=uri, uri_mode=True, name=name)``; the database name defaults to the URI's."""
    from fireworks import LaunchPad
    from pymongo.uri_parser import parse_uri

    if name is None:
        name = parse_uri(uri).get("database")
    if not name:
        raise InputError(f"no LaunchPad database name: give name= or put it in the URI ({_redact(uri)})")
    return LaunchPad(host=uri, uri_mode=True, name=name, **kwargs)


def submit(
    flow: "Flow | Job | list[Job]",
    launchpad: "LaunchPad",
    store: "JobStore | None" = None,
    **kwargs: Any,
) -> dict[int, int]:
    """Convert ``flow`` with :func:`flow_to_workflow` and add it to ``launchpad``.

    Returns FireWorks' mapping of the Workflow's provisional Firework ids to the ids in the
    LaunchPad.
    """
    wf = flow_to_workflow(flow, store=store, **kwargs)
    return launchpad.add_wf(wf)


def category_counts(launchpad: "LaunchPad", query: dict | None = None) -> dict[str, dict[str, int]]:
    """``{category: {state: count}}`` of the Fireworks in a LaunchPad (``query`` narrows it)."""
    counts: dict[str, dict[str, int]] = {}
    for doc in launchpad.fireworks.find(query or {}, {"state": 1, "spec._category": 1}):
        category = (doc.get("spec") or {}).get("_category") or "none"
        by_state = counts.setdefault(category, {})
        by_state[doc["state"]] = by_state.get(doc["state"], 0) + 1
    return counts


def jobflow_config(
    mongo_uri: str,
    database: str | None = None,
    collection: str | None = None,
    data_collection: str | None = None,
) -> dict[str, Any]:
    """jobflow settings (``JOB_STORE``) for workers writing to MongoDB + GridFS.

    Same layout as :func:`phonon_flows.store.get_store`: documents in ``collection``, large data
    in the GridFS bucket ``data_collection`` (zlib-compressed), additional store named ``data``.
    """
    settings = get_settings()
    database = database or settings.database
    return {
        "JOB_STORE": {
            "docs_store": {
                "type": "MongoStore",
                "database": database,
                "collection_name": collection or settings.collection,
                "uri": mongo_uri,
            },
            "additional_stores": {
                DATA_STORE_NAME: {
                    "type": "GridFSStore",
                    "database": database,
                    "collection_name": data_collection or settings.data_collection,
                    "uri": mongo_uri,
                    "compression": True,
                }
            },
        }
    }


def write_jobflow_config(path: str | Path, mongo_uri: str, **kwargs: Any) -> Path:
    """Write :func:`jobflow_config` to ``path`` (point ``JOBFLOW_CONFIG_FILE`` at it on workers)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(jobflow_config(mongo_uri, **kwargs), sort_keys=False))
    return path


def _redact(uri: str) -> str:
    """The URI without its password, for messages."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


_PENDING_STATES = ("READY", "WAITING", "RESERVED", "RUNNING")


def run_worker(
    launchpad: "LaunchPad",
    fworker: Any = None,  # FWorker, a worker yaml, or None for FireWorks' default (my_fworker.yaml)
    sleep_time: float = 2,
    timeout: float | None = None,
    strm_lvl: str = "INFO",
    m_dir: str | Path | None = None,
) -> int:
    """Run Fireworks of one worker's category until none of them can still become ready.

    FireWorks' ``rapidfire(nlaunches=0)`` stops as soon as no Firework *of its category* is
    ready, running or has waiting children; a ``gpu`` worker whose next Firework waits on a
    ``cpu`` parent therefore quits early. This loops ``rapidfire(nlaunches=0)`` until none of
    the worker's Fireworks is READY/WAITING/RESERVED/RUNNING, or nothing in the whole
    LaunchPad is RESERVED/RUNNING or READY with a category any more (what is left waits on a
    failure).
    Returns the number of Fireworks this worker launched.
    """
    import time
    from datetime import datetime, timezone

    from fireworks.core.fworker import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    if fworker is None:
        fworker = FWorker.auto_load()
    elif not isinstance(fworker, FWorker):
        fworker = FWorker.from_file(str(fworker))
    m_dir = str(m_dir) if m_dir is not None else None
    start = time.monotonic()
    started_at = datetime.now(timezone.utc).replace(tzinfo=None)  # FireWorks stores naive UTC
    while True:
        remaining = None if timeout is None else max(1, int(timeout - (time.monotonic() - start)))
        rapidfire(launchpad, fworker, m_dir=m_dir, nlaunches=0, sleep_time=sleep_time, strm_lvl=strm_lvl, timeout=remaining)
        if timeout is not None and time.monotonic() - start >= timeout:
            break
        mine = dict(fworker.query)
        mine["state"] = {"$in": list(_PENDING_STATES)}
        if launchpad.fireworks.count_documents(mine) == 0:
            break
        progressing = {
            "$or": [
                {"state": {"$in": ["RESERVED", "RUNNING"]}},
                {"state": "READY", "spec._category": {"$exists": True}},
            ]
        }
        if launchpad.fireworks.count_documents(progressing) == 0:
            break
        time.sleep(sleep_time)
    return launchpad.launches.count_documents(
        {"fworker.name": fworker.name, "fworker.category": fworker.category, "time_start": {"$gte": started_at}}
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m phonon_flows.fireworks -l launchpad.yaml -w my_fworker_gpu.yaml``: a worker."""
    import argparse

    from fireworks import FWorker, LaunchPad

    parser = argparse.ArgumentParser(description=run_worker.__doc__.splitlines()[0])
    parser.add_argument("-l", "--launchpad", required=True, help="launchpad yaml (see launchpad.yaml.example)")
    parser.add_argument("-w", "--fworker", required=True, help="worker yaml (my_fworker_gpu.yaml / my_fworker_cpu.yaml)")
    parser.add_argument("--sleep", type=float, default=2, help="seconds between polls of the LaunchPad")
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--dir", default=None, help="directory for the launcher folders (default: here)")
    args = parser.parse_args(argv)
    launchpad = LaunchPad.from_file(args.launchpad)
    fworker = FWorker.from_file(args.fworker)
    n = run_worker(launchpad, fworker, sleep_time=args.sleep, timeout=args.timeout, m_dir=args.dir)
    print(f"worker {fworker.name} ({fworker.category}): {n} Fireworks launched")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
