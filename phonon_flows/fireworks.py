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

Failures stay local, as in :func:`phonon_flows.runner.run_campaign`: every Firework of a campaign
runs :class:`CampaignJobFiretask` and allows fizzled parents (FireWorks' ``_allow_fizzled_parents``).
A job that raises is recorded in the store (material, stage, reason, its launch directory with
``job.log``) and its Firework FIZZLES; a job whose inputs are missing because an upstream job
failed is recorded as *skipped* and its Firework completes without output, so the jobs after it
(and every other material) go on. ``phonon-flows rerun CAMPAIGN --launchpad launchpad.yaml``
reruns the fizzled and skipped ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireworks import FWAction, explicit_serialize
from jobflow.managers.fireworks import JobFiretask

from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.makers.base import CATEGORIES
from phonon_flows.runner import (
    clear_failure,
    error_type_of,
    failure_records,
    job_output,
    one_line,
    soft_failure,
    write_failure,
)
from phonon_flows.schemas.campaign import JobFailureDoc
from phonon_flows.settings import get_settings
from phonon_flows.store import DATA_STORE_NAME, METADATA_KEY

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
    for fw in wf.fws:
        if METADATA_KEY in fw.spec and type(fw.tasks[0]) is JobFiretask:
            # a campaign job: failures recorded, dependents not stalled by a fizzled parent
            fw.tasks[0] = CampaignJobFiretask(job=fw.tasks[0]["job"], store=fw.tasks[0]["store"])
            fw.spec["_allow_fizzled_parents"] = True
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


def _upstream_problem(job: Any, store: Any) -> tuple[str, str] | None:
    """(uuid, reason) of an upstream job whose output ``job`` needs but is not usable: missing
    (it failed, was skipped or never ran) or a document that says it failed."""
    uuids = list(dict.fromkeys(ref.uuid for ref in job.input_references))
    if not uuids:
        return None
    there = {d["uuid"] for d in store.docs_store.query({"uuid": {"$in": uuids}}, properties=["uuid"])}
    soft = {d["uuid"]: d.get("output") or {} for d in store.docs_store.query(
        {"uuid": {"$in": uuids}, "output.failed": True}, properties=["uuid", "output.error", "output.errors"])}
    records = {r["job_uuid"]: r for r in failure_records(store, uuids)}
    for uuid in uuids:
        if uuid in soft:
            return uuid, f"needs the output of a job that failed: {soft_failure({**soft[uuid], 'failed': True})}"
        if uuid not in there:
            rec = records.get(uuid)
            if rec:
                return uuid, f"needs the output of a job that {rec.get('state', 'failed')}: {rec.get('reason')}"
            return uuid, f"needs the output of job {uuid}, which is not in the store"
    return None


@explicit_serialize
class CampaignJobFiretask(JobFiretask):
    """jobflow's ``JobFiretask`` for the jobs of a campaign: failures stay local.

    - a job whose needed inputs are missing (an upstream job failed or was skipped) is not run:
      a *skipped* record goes to the store and the Firework completes (``stored_data`` says why),
      so its own dependents go on in the same way;
    - a job that raises gets a *failed* record (reason, launch directory, traceback tail) and its
      Firework fizzles; its dependents are READY anyway (``_allow_fizzled_parents``);
    - the job's printing and logging go to ``job.log`` in the launch directory, and the logging
      configuration of the worker is the same after the job as before it.
    """

    def run_task(self, fw_spec):
        from jobflow import SETTINGS
        from jobflow.core.reference import OnMissing

        job = self.get("job")
        store = self.get("store") or SETTINGS.JOB_STORE
        store.connect()
        tag = dict((job.metadata or {}).get(METADATA_KEY) or {})
        material_id, stage = tag.get("material_id"), tag.get("stage")
        launch_dir = Path.cwd()
        if job.config.on_missing_references == OnMissing.ERROR:
            problem = _upstream_problem(job, store)
            if problem is not None:
                upstream, reason = problem
                write_failure(store, job, JobFailureDoc(
                    material_id=material_id or job.name, stage=stage or "job", reason=reason, state="skipped",
                    campaign=tag.get("campaign"), job_uuid=job.uuid, job_name=job.name, upstream_uuid=upstream,
                    directory=str(launch_dir),
                ))
                return FWAction(stored_data={"phonon_flows_skipped": reason})
        try:
            with job_output(launch_dir, capture=True):
                print(f"job {job.name} ({job.uuid}) on FireWorks, launch directory {launch_dir}")
                action = super().run_task(fw_spec)
        except Exception as exc:
            import traceback

            tb = traceback.format_exc()
            with open(launch_dir / "job.log", "a") as log:
                log.write(tb)
            write_failure(store, job, JobFailureDoc(
                material_id=material_id or job.name, stage=stage or "job",
                reason=f"{type(exc).__name__}: {one_line(exc)}", directory=str(launch_dir), state="failed",
                campaign=tag.get("campaign"), job_uuid=job.uuid, job_name=job.name, error_type=type(exc).__name__,
                traceback_tail="".join(tb.splitlines(True)[-12:]),
            ))
            raise
        output = (store.query_one({"uuid": job.uuid}, properties=["output"], sort={"index": -1}) or {}).get("output")
        soft = soft_failure(output) if isinstance(output, dict) else None
        if soft:  # the job's document says it failed: a record with its launch directory
            write_failure(store, job, JobFailureDoc(
                material_id=material_id or job.name, stage=stage or "job", reason=soft, directory=str(launch_dir),
                state="failed", campaign=tag.get("campaign"), job_uuid=job.uuid, job_name=job.name,
                error_type=error_type_of(soft),
            ))
        else:
            clear_failure(store, job.uuid)
        return action


def ensure_launchpad_ready(launchpad: "LaunchPad") -> bool:
    """Initialise a fresh LaunchPad (no Fireworks, no id counter) the way ``lpad reset`` does.

    Returns True when it initialised it. A LaunchPad that holds Fireworks or workflows is never
    reset: when its id counter is missing, an error says what to do.
    """
    if launchpad.fw_id_assigner.count_documents({}) > 0:
        return False
    held = launchpad.fireworks.count_documents({}) + launchpad.workflows.count_documents({})
    if held:
        raise PhononFlowsError(
            f"the LaunchPad {launchpad.name!r} holds {held} Fireworks/workflows but has no id counter "
            "(collection fw_id_assigner); it was not made by FireWorks' `lpad reset`: repair it or use another "
            "database name in launchpad.yaml"
        )
    launchpad.reset("", require_password=False)
    return True


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
    ensure_launchpad_ready(launchpad)
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


def write_fworker(template: str | Path, name: str, folder: str | Path) -> Path:
    """A copy of a FireWorker yaml (e.g. the shipped ``my_fworker_gpu.yaml``) under another
    ``name``, written to ``folder/<name>.yaml``: several workers of one category on one host each
    need their own name. Returns the path."""
    import yaml

    template = Path(template)
    try:
        data = yaml.safe_load(template.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the FireWorker file {template}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{template} is not a FireWorker yaml (a mapping with name and category)")
    data["name"] = name
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _redact(uri: str) -> str:
    """The URI without its password, for messages."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def _fw_reason(launchpad: "LaunchPad", fw: dict) -> str:
    """The last line of the stack trace of a Firework's latest launch (or why there is none)."""
    ids = list(fw.get("launches") or [])
    reason = "no launch recorded"
    for launch in launchpad.launches.find({"launch_id": {"$in": ids}}, {"action": 1, "state": 1, "launch_id": 1},
                                          sort=[("launch_id", 1)]):
        stored = (launch.get("action") or {}).get("stored_data") or {}
        trace = (stored.get("_exception") or {}).get("_stacktrace") or ""
        if trace:
            reason = trace.strip().splitlines()[-1]
        elif stored.get("_fizzled_parents") is not None or launch.get("state") == "FIZZLED":
            reason = "the run was lost (worker killed or out of time: no exception recorded)"
    return reason


def launchpad_jobs(launchpad: "LaunchPad", campaign: str) -> dict[str, dict[str, Any]]:
    """``{job uuid: {fw_id, state, name, launch_dir, reason}}`` of a campaign's Fireworks
    (``reason`` for FIZZLED ones: the last line of the stack trace, or a lost run)."""
    out: dict[str, dict[str, Any]] = {}
    proj = {"fw_id": 1, "name": 1, "state": 1, "launches": 1, "spec._tasks.job.uuid": 1}
    for fw in launchpad.fireworks.find({f"spec.{METADATA_KEY}.campaign": campaign}, proj):
        tasks = (fw.get("spec") or {}).get("_tasks") or [{}]
        uuid = (tasks[0].get("job") or {}).get("uuid")
        if not uuid:
            continue
        launch_dir = None
        if fw.get("launches"):
            last = launchpad.launches.find_one({"launch_id": max(fw["launches"])}, {"launch_dir": 1})
            launch_dir = (last or {}).get("launch_dir")
        info = {"fw_id": fw["fw_id"], "state": fw["state"], "name": fw["name"], "launch_dir": launch_dir,
                "reason": _fw_reason(launchpad, fw) if fw["state"] == "FIZZLED" else None}
        if uuid not in out or fw["fw_id"] > out[uuid]["fw_id"]:
            out[uuid] = info
    return out


def launchpad_campaign_docs(launchpad: "LaunchPad", campaign: str | None = None) -> list[dict[str, Any]]:
    """The CampaignDocs (dicts) carried by the first Firework of each campaign in the LaunchPad:
    the campaign is known there from ``submit`` on, before any worker wrote it to the store."""
    crit: dict[str, Any] = {f"spec.{METADATA_KEY}.stage": "campaign"}
    if campaign is not None:
        crit[f"spec.{METADATA_KEY}.campaign"] = campaign
    docs = {}
    for fw in launchpad.fireworks.find(crit, {"fw_id": 1, "spec._tasks": 1}, sort=[("fw_id", 1)]):
        try:
            doc = fw["spec"]["_tasks"][0]["job"]["function_args"][0]
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(doc, dict) and doc.get("campaign"):
            docs[doc["campaign"]] = {k: v for k, v in doc.items() if not k.startswith("@")}
    return [docs[k] for k in sorted(docs)]


def rerun_campaign_fireworks(
    launchpad: "LaunchPad", campaign: str, store: Any = None, lost_after: float | None = None
) -> list[int]:
    """Put a campaign's failed Fireworks back to READY (FireWorks' ``rerun_fw``: their children too).

    Failed: FIZZLED; with ``store``, also Fireworks that completed but whose job the store records
    as failed or skipped. ``lost_after`` (s): first mark RUNNING Fireworks whose worker stopped
    reporting that long ago (killed, out of walltime) as FIZZLED, like ``lpad detect_lostruns
    --fizzle``. Returns the ids of the Fireworks rerun (the ones asked for).
    """
    crit = {f"spec.{METADATA_KEY}.campaign": campaign}
    if lost_after is not None:
        launchpad.detect_lostruns(expiration_secs=lost_after, fizzle=True, query=crit)
    jobs = launchpad_jobs(launchpad, campaign)
    todo = {info["fw_id"] for info in jobs.values() if info["state"] == "FIZZLED"}
    if store is not None:
        store.connect()
        uuids = list(jobs)
        bad = {r["job_uuid"] for r in failure_records(store, uuids)}
        bad |= {d["uuid"] for d in store.docs_store.query({"uuid": {"$in": uuids}, "output.failed": True},
                                                          properties=["uuid"])}
        # (the per-material documents of a batched job are no Fireworks: rerunning the failed
        # relaxation reruns the batch, its child)
        todo |= {jobs[u]["fw_id"] for u in bad if u in jobs and jobs[u]["state"] == "COMPLETED"}
    done: set[int] = set()
    for fw_id in sorted(todo):
        if fw_id not in done:
            done |= set(launchpad.rerun_fw(fw_id) or [fw_id])
    return sorted(todo)


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

    from fireworks.core.fworker import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    if fworker is None:
        fworker = FWorker.auto_load()
    elif not isinstance(fworker, FWorker):
        fworker = FWorker.from_file(str(fworker))
    if m_dir is not None:
        Path(m_dir).mkdir(parents=True, exist_ok=True)
        m_dir = str(Path(m_dir).resolve())
    start = time.monotonic()
    mine_before = _launch_ids(launchpad, fworker)
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
    return len(_launch_ids(launchpad, fworker) - mine_before)


def _launch_ids(launchpad: "LaunchPad", fworker: Any) -> set[int]:
    """Launch ids of this worker (name, category, host) in the LaunchPad."""
    import socket

    crit = {"fworker.name": fworker.name, "fworker.category": fworker.category, "host": socket.gethostname()}
    return {d["launch_id"] for d in launchpad.launches.find(crit, {"launch_id": 1})}


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
    n = run_worker(launchpad, fworker, sleep_time=args.sleep, timeout=args.timeout, m_dir=args.dir,
                   strm_lvl=launchpad.strm_lvl or "INFO")
    print(f"worker {fworker.name} ({fworker.category}): {n} Fireworks launched")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
