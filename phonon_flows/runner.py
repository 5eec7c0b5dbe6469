"""Run a campaign on this machine, resumably, and report where campaigns stand.

:func:`run_campaign` is a local manager like :func:`jobflow.managers.local.run_locally`, with
what a campaign of many materials needs:

- **resume**: a job whose output is already in the store (and not a failed document) is not run
  again, unless a job it depends on ran in this session. The campaign flows give every job a
  deterministic uuid (:mod:`phonon_flows.flows`), so a rerun -- after a crash, a ``kill -9`` or a
  change of one setting -- redoes only what is missing and writes no second document for the same
  work (jobflow stores outputs by ``(uuid, index)``);
- **failures stay local**: an exception in one job is recorded (:class:`JobFailureDoc`: material,
  stage, reason, job directory) and the campaign goes on; jobs that need the failed job's output
  are skipped and recorded as such; collecting jobs (training set, benchmark) run with what is
  there (their ``on_missing_references`` is ``NONE``);
- **one directory per job** under ``work_dir/<campaign>/``, named by stage, material and uuid, so a
  rerun finds the same directory (MACE training restarts from its checkpoint); the job's printed
  output and log go to ``job.log`` there;
- a **progress bar** (rich) and a :class:`RunSummary`.

:func:`campaign_status` tells, from the store alone, which jobs of each campaign are done, failed,
skipped or pending, with the reasons of the failures.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jobflow import SETTINGS, Flow, Job, JobStore
from jobflow.core.flow import get_flow
from jobflow.core.reference import OnMissing

from phonon_flows.core.mace_training import TRAINING_PROGRESS
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.progress import LineProgress
from phonon_flows.schemas.batch import PACK_PROGRESS
from phonon_flows.schemas.campaign import (
    CAMPAIGN_KIND,
    FAILURE_KIND,
    FAILURE_UUID_PREFIX,
    RUNNING_KIND,
    RUNNING_UUID_PREFIX,
    CampaignDoc,
    JobFailureDoc,
)
from phonon_flows.store import METADATA_KEY, remove_orphan_blobs

logger = logging.getLogger(__name__)

#: default folder of the job directories (relative to the working directory)
DEFAULT_WORK_DIR = "phonon_flows_runs"
#: job states of a run and of :func:`campaign_status`
STATES = ("done", "reused", "failed", "skipped", "pending")
_CHUNK = 500


# ---------------------------------------------------------------------------------------------
# results of a run
# ---------------------------------------------------------------------------------------------
@dataclass
class JobOutcome:
    """What happened to one job in a run. ``state``: done (ran now), reused (its output was
    already in the store), failed, or skipped (a job it needs failed)."""

    uuid: str
    name: str
    state: str
    stage: str | None = None
    material_id: str | None = None
    seconds: float = 0.0
    reason: str | None = None
    directory: str | None = None
    #: materials of a job of many materials (a batched phonon job) that failed in it
    failed_material_ids: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    """Counts and failures of one :func:`run_campaign` call."""

    campaign: str | None
    work_dir: str
    outcomes: list[JobOutcome] = field(default_factory=list)
    wall_time: float = 0.0

    input_failures: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        c = self.counts
        refused = f", {len(self.input_failures)} inputs refused" if self.input_failures else ""
        return (f"RunSummary(campaign={self.campaign!r}, jobs={self.n_jobs}, done={c['done']}, reused={c['reused']}, "
                f"failed={c['failed']}, skipped={c['skipped']}{refused}, wall_time={self.wall_time:.0f} s)")

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)

    @property
    def counts(self) -> dict[str, int]:
        """``{done, reused, failed, skipped}``: jobs in each state."""
        return {s: self.count(s) for s in ("done", "reused", "failed", "skipped")}

    @property
    def n_jobs(self) -> int:
        return len(self.outcomes)

    @property
    def n_run(self) -> int:
        """Jobs that ran in this call (done or failed)."""
        return self.count("done") + self.count("failed")

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and self.count("skipped") == 0

    @property
    def failures(self) -> list[JobOutcome]:
        """Failed and skipped jobs, with reasons."""
        return [o for o in self.outcomes if o.state in ("failed", "skipped")]

    def failed_materials(self) -> list[str]:
        """Materials with a failed or skipped job (also those failing inside a job of many)."""
        ids = {o.material_id for o in self.failures if o.material_id}
        ids |= {m for o in self.failures for m in o.failed_material_ids}
        return sorted(ids)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "campaign": self.campaign,
            "work_dir": self.work_dir,
            "wall_time": self.wall_time,
            "counts": self.counts,
            "failures": [asdict(o) for o in self.failures],
            "input_failures": [_as_plain(e) for e in self.input_failures],
        }

    def render(self) -> str:
        """A few lines: counts, then one line per failure."""
        c = self.counts
        lines = [
            f"campaign {self.campaign or '?'}: {self.n_jobs} jobs, {c['done']} run, {c['reused']} reused from the "
            f"store, {c['failed']} failed, {c['skipped']} skipped ({self.wall_time:.0f} s)"
        ]
        for o in self.failures:
            where = f" [{o.directory}]" if o.directory and o.state == "failed" else ""
            lines.append(f"  {o.state}: {o.material_id or '-'} {o.stage or o.name}: {o.reason}{where}")
        for e in self.input_failures:
            e = _as_plain(e)
            lines.append(f"  refused input: {e.get('material_id')}: {e.get('reason')}")
        return "\n".join(lines)


def _as_plain(obj: Any) -> dict[str, Any]:
    return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)


#: name of the saved flow of a local run, in ``work_dir/<campaign>/`` (read by ``phonon-flows rerun``)
FLOW_FILE = "flow.json"


def campaign_work_dir(campaign: str, work_dir: str | Path | None = None) -> Path:
    """``work_dir/<campaign>``: the folder of a campaign's job directories and saved flow."""
    return Path(work_dir or DEFAULT_WORK_DIR).resolve() / _safe(campaign)


def load_saved_flow(campaign: str, work_dir: str | Path | None = None) -> Flow:
    """The flow a local :func:`run_campaign` of ``campaign`` saved (for ``phonon-flows rerun``)."""
    import json

    from monty.json import MontyDecoder

    path = campaign_work_dir(campaign, work_dir) / FLOW_FILE
    if not path.is_file():
        raise InputError(f"no saved flow of campaign {campaign!r} at {path}: run it first with `phonon-flows run`, "
                         "or give --work-dir (FireWorks campaigns: give --launchpad)")
    flow = MontyDecoder().process_decoded(json.loads(path.read_text()))
    return flow


# ---------------------------------------------------------------------------------------------
# store utilities
# ---------------------------------------------------------------------------------------------
def _chunks(items: list[str], n: int = _CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def finished_jobs(store: JobStore, uuids: Iterable[str], retry_failed: bool = True) -> set[str]:
    """The uuids among ``uuids`` whose output is in the store: the highest-index document exists,
    its output is not None (a job replaced at run time and not finished), and -- with
    ``retry_failed`` -- it is not a document that says it failed (``output.failed == True``)."""
    uuids = list(dict.fromkeys(uuids))
    docs = store.docs_store
    highest: dict[str, int] = {}
    null: set[tuple[str, int]] = set()
    failed: set[tuple[str, int]] = set()
    for chunk in _chunks(uuids):
        crit = {"uuid": {"$in": chunk}}
        for d in docs.query(crit, properties=["uuid", "index"]):
            highest[d["uuid"]] = max(highest.get(d["uuid"], 0), int(d.get("index") or 1))
        for d in docs.query({**crit, "output": None}, properties=["uuid", "index"]):
            null.add((d["uuid"], int(d.get("index") or 1)))
        if retry_failed:
            for d in docs.query({**crit, "output.failed": True}, properties=["uuid", "index"]):
                failed.add((d["uuid"], int(d.get("index") or 1)))
    return {u for u, i in highest.items() if (u, i) not in null and (u, i) not in failed}


def failure_records(store: JobStore, uuids: Iterable[str] | None = None, campaign: str | None = None) -> list[dict]:
    """Failure records (JobFailureDoc dicts) of the given job uuids and/or campaign."""
    crit: dict[str, Any] = {"output.kind": FAILURE_KIND}
    if campaign is not None:
        crit["output.campaign"] = campaign
    out: list[dict] = []
    if uuids is None:
        return [d["output"] for d in store.docs_store.query(crit, properties=["output"])]
    for chunk in _chunks([FAILURE_UUID_PREFIX + u for u in uuids]):
        out += [d["output"] for d in store.docs_store.query({**crit, "uuid": {"$in": chunk}}, properties=["output"])]
    return out


def write_failure(store: JobStore, job: Job, doc: JobFailureDoc) -> None:
    store.docs_store.update(
        {
            "uuid": FAILURE_UUID_PREFIX + job.uuid,
            "index": 1,
            "name": f"{doc.state}: {job.name}",
            "output": doc.model_dump(mode="json"),
            "metadata": job.metadata,
            "hosts": list(job.hosts),
            "completed_at": datetime.now().isoformat(),
        },
        key=["uuid", "index"],
    )


def clear_failure(store: JobStore, uuid: str) -> None:
    store.docs_store.remove_docs({"uuid": FAILURE_UUID_PREFIX + uuid})


def write_running(store: JobStore, job: Job, job_dir: Path, campaign: str | None) -> None:
    """Mark ``job`` as running in this process (what ``status`` shows while a local run works)."""
    store.docs_store.update(
        {
            "uuid": RUNNING_UUID_PREFIX + job.uuid,
            "index": 1,
            "name": f"running: {job.name}",
            "output": {"kind": RUNNING_KIND, "job_uuid": job.uuid, "job_name": job.name, "campaign": campaign,
                       "pid": os.getpid(), "host": socket.gethostname(), "directory": str(job_dir),
                       "started_at": datetime.now().isoformat()},
            "metadata": job.metadata,
            "hosts": list(job.hosts),
            "completed_at": datetime.now().isoformat(),
        },
        key=["uuid", "index"],
    )


def clear_running(store: JobStore, uuid: str) -> None:
    store.docs_store.remove_docs({"uuid": RUNNING_UUID_PREFIX + uuid})


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _running_markers(store: JobStore, uuids: Iterable[str]) -> Iterable[tuple[dict, bool]]:
    """Each running marker of the given jobs, and whether it still runs (a marker left by a killed
    run, on this host, does not)."""
    here = socket.gethostname()
    for chunk in _chunks([RUNNING_UUID_PREFIX + u for u in uuids]):
        for d in store.docs_store.query({"uuid": {"$in": chunk}, "output.kind": RUNNING_KIND}, properties=["output"]):
            r = d["output"]
            yield r, r.get("host") != here or _process_alive(int(r.get("pid", -1)))


def running_records(store: JobStore, uuids: Iterable[str]) -> dict[str, dict]:
    """Running markers of the given jobs whose process still lives (a marker left by a killed run,
    on this host, is not running: that job is pending and a rerun does it)."""
    return {r["job_uuid"]: r for r, alive in _running_markers(store, uuids) if alive}


def remove_stale_running(store: JobStore, uuids: Iterable[str]) -> int:
    """Remove the running markers of the given jobs that a killed run left on this host (its process
    is gone). A kill between a job's stored output and its marker's removal leaves one behind, and a
    rerun that reuses that output would otherwise never clear it. Returns how many were removed."""
    stale = [RUNNING_UUID_PREFIX + r["job_uuid"] for r, alive in list(_running_markers(store, uuids)) if not alive]
    for chunk in _chunks(stale):
        store.docs_store.remove_docs({"uuid": {"$in": chunk}})
    return len(stale)


def _tag(job: Job) -> dict[str, Any]:
    return dict((job.metadata or {}).get(METADATA_KEY) or {})


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def soft_failure(output: Any) -> str | None:
    """The reason when a job returned a document that says it failed (PhononDoc, TrainingDoc,
    FailedCalculation)."""
    failed = output.get("failed") if isinstance(output, dict) else getattr(output, "failed", None)
    if failed is not True:
        return None
    get = output.get if isinstance(output, dict) else (lambda k, d=None: getattr(output, k, d))
    errors = get("errors") or []
    reason = get("error") or get("reason") or "; ".join(str(e) for e in errors)
    return " ".join(str(reason or "the document says it failed").split())


def _failed_material_ids(output: Any) -> list[str]:
    """``failed_materials`` of a document of many materials (PhononBatchDoc), as ids."""
    items = output.get("failed_materials") if isinstance(output, dict) else getattr(output, "failed_materials", None)
    out = []
    for item in items or []:
        mid = item.get("material_id") if isinstance(item, dict) else getattr(item, "material_id", None)
        if mid:
            out.append(str(mid))
    return out


def error_type_of(reason: str | None) -> str | None:
    """The exception class a failure reason starts with (``"NonRecoverableError: ..."``), if any."""
    import re

    m = re.match(r"([A-Za-z_][A-Za-z0-9_.]*(?:Error|Exception|Exit|Interrupt)):", reason or "")
    return m.group(1) if m else None


def _dir_name(job: Job) -> str:
    import re

    tag = _tag(job)
    parts = [tag.get("stage") or "job", tag.get("material_id") or "", job.uuid[:8]]
    if not tag.get("stage"):
        parts[0] = job.name
    text = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")


class _Lock:
    """An exclusive lock on a campaign's work directory: two local runs of one campaign at once
    would compute the same jobs twice."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise PhononFlowsError(
                f"another run of this campaign is going on (lock {self.path}); wait for it or stop it first"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        import fcntl

        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def kept_logging(names: Iterable[str] = ("", "jobflow")):
    """The handlers, levels and propagation of the named loggers (root and jobflow) are the same
    after the block as before it: a job that configures logging (mace, jobflow's
    ``initialize_logger``) must not make a worker print every later line twice or at DEBUG."""
    loggers = [logging.getLogger(n or None) for n in names]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, handlers, level, propagate in saved:
            for h in list(lg.handlers):
                if h not in handlers:
                    lg.removeHandler(h)
            for h in handlers:
                if h not in lg.handlers:
                    lg.addHandler(h)
            lg.setLevel(level)
            lg.propagate = propagate


@contextlib.contextmanager
def job_output(job_dir: Path, capture: bool):
    """Run in ``job_dir`` with Python's stdout/stderr and the root logger also going to job.log
    (the job's log: ``<job_dir>/job.log``); the logging configuration is restored afterwards."""
    job_dir.mkdir(parents=True, exist_ok=True)
    if not capture:
        with contextlib.chdir(job_dir), kept_logging():
            yield
        return
    with open(job_dir / "job.log", "a") as log, contextlib.chdir(job_dir), kept_logging():
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        quiet = []
        for h in root.handlers:  # keep the console for the progress bar
            if h is not handler and isinstance(h, logging.StreamHandler) and h.level < logging.WARNING:
                quiet.append((h, h.level))
                h.setLevel(logging.WARNING)
        jobflow_logger = logging.getLogger("jobflow")
        try:
            log.write(f"\n==== {datetime.now().isoformat()} pid {os.getpid()}\n")
            log.flush()
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            for h in jobflow_logger.handlers:  # jobflow's initialize_logger points at sys.stdout = the log
                with contextlib.suppress(Exception):
                    h.flush()
            for h, level in quiet:
                h.setLevel(level)


class _JobProgressHandler(logging.Handler):
    """Shows the finished materials of a running pack (the log records of
    :mod:`phonon_flows.makers.batched_phonons` that carry ``schemas.batch.PACK_PROGRESS``) and the
    epochs of a running training (``core.mace_training.TRAINING_PROGRESS``) on the progress bar."""

    def __init__(self, bar: Any, job_name: str):
        super().__init__(logging.INFO)
        self.bar, self.job_name = bar, job_name

    def emit(self, record: logging.LogRecord) -> None:
        p = getattr(record, PACK_PROGRESS, None)
        t = getattr(record, TRAINING_PROGRESS, None)
        with contextlib.suppress(Exception):  # the bar must never break a job
            if p:
                self.bar.describe(f"{self.job_name}: {p['k']}/{p['n']} materials, last {p['material_id']} "
                                  f"{'failed' if p['failed'] else 'done'} ({p['n_supercells']} supercells, "
                                  f"{p['seconds']:.1f} s)")
            elif t:
                rmse = t.get("rmse_f_meV_A")
                self.bar.describe(f"{self.job_name}: epoch {t['epoch']}" + (f"/{t['epochs']}" if t.get("epochs") else "")
                                  + (f", validation force RMSE {rmse:.1f} meV/Å" if rmse is not None else ""))


#: loggers whose progress records a running job shows: a pack's materials, a training's epochs
PROGRESS_LOGGERS = ("phonon_flows.makers.batched_phonons", "phonon_flows.core.mace_training")


@contextlib.contextmanager
def pack_progress(bar: Any, job_name: str, logger_names: tuple[str, ...] = PROGRESS_LOGGERS):
    """While a job runs: each material a pack finishes and each epoch a training reaches update
    ``bar`` (its ``describe``); those loggers pass INFO records for the time of the block."""
    handler = _JobProgressHandler(bar, job_name)
    saved = []
    for name in logger_names:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        if not lg.isEnabledFor(logging.INFO):
            lg.setLevel(logging.INFO)
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
def run_campaign(
    flow: Flow | Job | list[Job],
    store: JobStore | None = None,
    progress: bool = True,
    resume: bool = True,
    work_dir: str | Path | None = None,
    retry_failed: bool = True,
    capture_output: bool = True,
    console: Any = None,
) -> RunSummary:
    """Run ``flow`` here, job by job in dependency order, and return a :class:`RunSummary`.

    ``resume``: skip jobs whose output is already in ``store`` (see :func:`finished_jobs`) unless
    a job they depend on ran now; ``retry_failed``: documents that say they failed are redone.
    ``work_dir``: parent of the campaign folder (default ``./phonon_flows_runs``); each job runs in
    ``work_dir/<campaign>/<stage>_<material>_<uuid8>/``. ``capture_output``: the jobs' printing
    and logging go to ``job.log`` in their directory instead of the terminal. ``console``: a
    rich Console for the progress bar (default: stderr).
    """
    store = store if store is not None else SETTINGS.JOB_STORE
    flow = get_flow(flow)
    campaign = (getattr(flow, "metadata", None) or {}).get(METADATA_KEY, {}).get("campaign")
    if campaign is None:
        campaign = next((_tag(j).get("campaign") for j in _all_jobs(flow) if _tag(j).get("campaign")), None)
    root = campaign_work_dir(campaign or flow.name or "flow", work_dir)
    summary = RunSummary(campaign=campaign, work_dir=str(root))
    refused = _refused_inputs(flow)
    if refused:
        summary.input_failures = refused
        for e in refused:
            logger.warning("refused input %s: %s", e.material_id, e.reason)
    t_start = time.perf_counter()
    store.connect()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some jobs are not connected")
        jobs = list(flow.iterflow())
    uuids = [j.uuid for j, _ in jobs]
    if resume:  # data objects a killed run wrote without their document
        orphans = remove_orphan_blobs(store, uuids)
        if orphans:
            logger.info("removed %d data objects a previous, interrupted run left without a document", orphans)
        stale = remove_stale_running(store, uuids)
        if stale:
            logger.info("removed %d running markers a previous, killed run left behind", stale)
    run = _CampaignRun(
        store=store, campaign=campaign, root=root, summary=summary, resume=resume, capture_output=capture_output,
        done_before=finished_jobs(store, uuids, retry_failed=retry_failed) if resume else set(),
        old_failures={r["job_uuid"] for r in failure_records(store, uuids)},
        bar=_Progress(progress, console, total=len(jobs), campaign=campaign),
    )
    try:
        with _Lock(root / ".lock"), run.bar:
            (root / FLOW_FILE).write_text(flow.to_json())
            for job, parents in jobs:
                run.run_one(job, parents, dynamic=False)
    finally:
        summary.wall_time = time.perf_counter() - t_start
    return summary


@dataclass
class _CampaignRun:
    """One run of a campaign: runs each job (or skips or reuses it) and records its outcome."""

    store: Any
    campaign: str | None
    root: Path
    summary: RunSummary
    resume: bool
    capture_output: bool
    done_before: set[str]
    old_failures: set[str]
    bar: Any
    state: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    ran_now: set[str] = field(default_factory=set)

    def record(self, outcome: JobOutcome) -> None:
        self.summary.outcomes.append(outcome)
        self.state[outcome.uuid] = outcome.state
        if outcome.reason:
            self.reasons[outcome.uuid] = outcome.reason

    def run_one(self, job: Job, parents: list[str], dynamic: bool) -> None:
        """Skip ``job`` (a job it needs failed), reuse its stored output, or run it."""
        tag = _tag(job)
        base = dict(uuid=job.uuid, name=job.name, stage=tag.get("stage"), material_id=tag.get("material_id"))
        bad = [p for p in parents if self.state.get(p) in ("failed", "skipped")]
        if bad and job.config.on_missing_references == OnMissing.ERROR:
            self._skip(job, tag, base, bad[0])
        elif (
            self.resume and not dynamic and job.uuid in self.done_before
            and not any(p in self.ran_now for p in parents)
        ):
            self.record(JobOutcome(**base, state="reused"))
            if job.uuid in self.old_failures:
                clear_failure(self.store, job.uuid)
            self.bar.advance(f"reused {job.name}")
        else:
            self._run(job, tag, base)

    def _skip(self, job: Job, tag: dict, base: dict, first: str) -> None:
        reason = f"needs the output of a job that {self.state[first]}: {self.reasons.get(first, 'see its record')}"
        out = JobOutcome(**base, state="skipped", reason=reason)
        self.record(out)
        write_failure(self.store, job, JobFailureDoc(
            material_id=out.material_id or job.name, stage=out.stage or "job", reason=reason,
            state="skipped", campaign=tag.get("campaign", self.campaign), job_uuid=job.uuid, job_name=job.name,
            upstream_uuid=first,
        ))
        self.bar.advance(f"skipped {job.name}")

    def _run(self, job: Job, tag: dict, base: dict) -> None:
        job_dir = self.root / _dir_name(job)
        self.bar.describe(f"{job.name}")
        t0 = time.perf_counter()
        write_running(self.store, job, job_dir, tag.get("campaign", self.campaign))
        try:
            with job_output(job_dir, self.capture_output), pack_progress(self.bar, job.name):
                if self.capture_output:
                    print(f"job {job.name} ({job.uuid})")
                response = job.run(store=self.store, job_dir=job_dir)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not sink the campaign
            clear_running(self.store, job.uuid)
            self._failed(job, tag, base, exc, job_dir, time.perf_counter() - t0)
            return
        clear_running(self.store, job.uuid)
        self.ran_now.add(job.uuid)
        soft = soft_failure(response.output)
        self.record(JobOutcome(**base, state="failed" if soft else "done", seconds=time.perf_counter() - t0,
                               reason=soft, directory=str(job_dir),
                               failed_material_ids=_failed_material_ids(response.output) if soft else []))
        if soft:  # the job's document says it failed: a record with its directory, like a raise
            write_failure(self.store, job, JobFailureDoc(
                material_id=base["material_id"] or job.name, stage=base["stage"] or "job", reason=soft,
                directory=str(job_dir), state="failed", campaign=tag.get("campaign", self.campaign),
                job_uuid=job.uuid, job_name=job.name, error_type=error_type_of(soft),
            ))
        elif job.uuid in self.old_failures:
            clear_failure(self.store, job.uuid)
        self.bar.advance(f"{'failed' if soft else 'done'} {job.name}")
        if response.stored_data is not None:
            logger.warning("%s: Response.stored_data is not kept by the local runner", job.name)
        for new in (response.replace, response.detour, response.addition):
            if new is not None:
                sub = list(new.iterflow())
                self.bar.add(len(sub))
                for sub_job, sub_parents in sub:
                    self.run_one(sub_job, sub_parents, dynamic=True)

    def _failed(self, job: Job, tag: dict, base: dict, exc: Exception, job_dir: Path, seconds: float) -> None:
        reason = f"{type(exc).__name__}: {one_line(exc)}"
        tb = traceback.format_exc()
        with contextlib.suppress(OSError):
            with open(job_dir / "job.log", "a") as log:
                log.write(tb)
        out = JobOutcome(**base, state="failed", seconds=seconds, reason=reason, directory=str(job_dir))
        self.record(out)
        # a job that failed before and fails again changes nothing downstream (no retraining
        # because one material failed twice); one whose stored output is now stale does
        if job.uuid in self.done_before:
            self.ran_now.add(job.uuid)
        write_failure(self.store, job, JobFailureDoc(
            material_id=out.material_id or job.name, stage=out.stage or "job", reason=reason,
            directory=str(job_dir), state="failed", campaign=tag.get("campaign", self.campaign), job_uuid=job.uuid,
            job_name=job.name, error_type=type(exc).__name__, traceback_tail="".join(tb.splitlines(True)[-12:]),
        ))
        self.bar.advance(f"failed {job.name}")


def _refused_inputs(flow: Flow) -> list:
    """The input failures of a campaign flow (its CampaignDoc, the first job's argument)."""
    for j in _all_jobs(flow):
        if _tag(j).get("stage") == "campaign" and j.function_args:
            doc = j.function_args[0]
            return list(getattr(doc, "input_failures", None) or [])
    return []


def _all_jobs(flow: Any) -> list:
    if not isinstance(flow, Flow):
        return [flow]
    out = []
    for item in flow.jobs:
        out.extend(_all_jobs(item))
    return out


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(text)).strip("-") or "campaign"


class _Progress:
    """A rich progress bar on a terminal, plain progress lines elsewhere (a log file, a cluster
    job's stderr: :class:`~phonon_flows.progress.LineProgress`), or nothing."""

    def __init__(self, enabled: bool, console: Any, total: int, campaign: str | None):
        self.enabled = enabled
        self.total = total
        self.campaign = campaign
        self.progress = None
        self.lines = None
        self.task = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = console or Console(file=sys.stderr)
            # a console that looks up sys.stderr (or stdout) at each write (rich's Console(stderr=True),
            # as the CLI makes it) would write into job.log while a job runs (job_output redirects
            # them): pin it to the stream it has now
            console.file = console.file
            if not console.is_terminal:
                self.lines = LineProgress(console, campaign or "campaign", total, unit="jobs")
                return
            self.progress = Progress(
                TextColumn("{task.fields[campaign]}", markup=False, style="bold"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}", markup=False),
                console=console,
                redirect_stdout=False,
                redirect_stderr=False,
                transient=False,
            )

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
            self.task = self.progress.add_task("", total=self.total, campaign=self.campaign or "jobs")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.update(self.task, description="")
            self.progress.__exit__(*exc)
        if self.lines is not None:
            self.lines.close()

    def describe(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=text)
        if self.lines is not None:
            self.lines.update(text)

    def advance(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=text)
        if self.lines is not None:
            self.lines.update(text, advance=1)

    def add(self, n: int) -> None:
        self.total += n
        if self.progress is not None:
            self.progress.update(self.task, total=self.total)
        if self.lines is not None:
            self.lines.update(total=self.total)


# ---------------------------------------------------------------------------------------------
# status from the store
# ---------------------------------------------------------------------------------------------
@dataclass
class CampaignStatus:
    """Where a campaign stands, from the store: counts of jobs by state and the failures."""

    campaign: str
    campaign_type: str | None
    n_jobs: int
    counts: dict[str, int]
    by_stage: dict[str, dict[str, int]]
    failures: list[dict[str, Any]]
    input_failures: list[dict[str, Any]]
    reference_note: str | None = None
    completed_at: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def campaign_docs(store: JobStore, campaign: str | None = None) -> list[dict[str, Any]]:
    """The latest CampaignDoc (dict) of each campaign in the store (or of ``campaign``), with
    ``_uuid`` and ``_completed_at`` of its job."""
    store.connect()
    crit: dict[str, Any] = {"output.kind": CAMPAIGN_KIND}
    if campaign is not None:
        crit["output.campaign"] = campaign
    latest: dict[str, dict[str, Any]] = {}
    for d in store.docs_store.query(crit, properties=["uuid", "output", "completed_at"]):
        out = dict(d["output"])
        out["_uuid"] = d["uuid"]
        out["_completed_at"] = d.get("completed_at")
        name = out["campaign"]
        if name not in latest or str(out["_completed_at"]) > str(latest[name]["_completed_at"]):
            latest[name] = out
    return [latest[k] for k in sorted(latest)]


#: job states of :func:`campaign_status`
STATUS_STATES = ("done", "failed", "skipped", "running", "pending")
#: FireWorks states -> campaign_status states, for jobs the store knows nothing of yet
_FW_STATES = {"RUNNING": "running", "RESERVED": "running", "FIZZLED": "failed", "READY": "pending",
              "WAITING": "pending", "PAUSED": "pending", "DEFUSED": "pending", "ARCHIVED": "pending",
              "COMPLETED": "pending"}


def campaign_status(
    store: JobStore,
    campaign: str | None = None,
    fireworks: Any = None,
    extra_docs: list[dict[str, Any]] | None = None,
) -> list[CampaignStatus]:
    """Status of each campaign (or of ``campaign``): one view of the store and, when given, the
    FireWorks LaunchPad.

    A job is *done* when its output is in the store and does not say it failed, *failed* when it
    raised (failure record), its output says it failed or its Firework FIZZLED, *skipped* when a
    job it needed failed, *running* when its Firework is RUNNING/RESERVED or a local run (a live
    process) is working on it, else *pending* (not run
    yet, or interrupted). ``fireworks``: a callable ``campaign -> {job uuid: {state, reason,
    launch_dir, fw_id}}`` (:func:`phonon_flows.fireworks.launchpad_jobs`); ``extra_docs``:
    CampaignDocs not yet in the store (those a LaunchPad carries from ``submit`` on).
    """
    docs = campaign_docs(store, campaign)
    known_names = {d["campaign"] for d in docs}
    for d in extra_docs or []:
        if d["campaign"] not in known_names and (campaign is None or d["campaign"] == campaign):
            docs.append(dict(d))
            known_names.add(d["campaign"])
    docs.sort(key=lambda d: d["campaign"])
    if campaign is not None and not docs:
        known = sorted({d["campaign"] for d in campaign_docs(store)})
        raise InputError(
            f"no campaign {campaign!r} in the store" + (f" (campaigns: {', '.join(known)})" if known else " (it is empty)")
        )
    out: list[CampaignStatus] = []
    for doc in docs:
        cdoc = CampaignDoc.model_validate({k: v for k, v in doc.items() if not k.startswith(("_", "@"))})
        uuids = [j.uuid for j in cdoc.jobs]
        finished = finished_jobs(store, uuids, retry_failed=False)
        soft: dict[str, str] = {}
        for chunk in _chunks(uuids):
            for d in store.docs_store.query(
                {"uuid": {"$in": chunk}, "output.failed": True},
                properties=["uuid", "index", "output.errors", "output.error", "output.reason", "output.material_id"],
            ):
                soft[d["uuid"]] = soft_failure({**d.get("output", {}), "failed": True}) or "failed"
        records = {r["job_uuid"]: r for r in failure_records(store, uuids)}
        running = running_records(store, uuids)
        notes: list[str] = []
        for chunk in _chunks(uuids):
            for d in store.docs_store.query({"uuid": {"$in": chunk}, "output.warnings": {"$exists": True, "$ne": []}},
                                            properties=["output.warnings"]):
                notes += [str(w) for w in d["output"]["warnings"]]
        fw = fireworks(cdoc.campaign) if fireworks is not None else {}
        counts = {s: 0 for s in STATUS_STATES}
        by_stage: dict[str, dict[str, int]] = {}
        failures: list[dict[str, Any]] = []
        for j in cdoc.jobs:
            if j.uuid in soft:
                s = "failed"
                failures.append({"material_id": j.material_id, "stage": j.stage, "state": "failed",
                                 "reason": soft[j.uuid],
                                 "directory": records.get(j.uuid, {}).get("directory") or fw.get(j.uuid, {}).get("launch_dir"),
                                 "job_name": j.name})
            elif j.uuid in finished:
                s = "done"
            elif j.uuid in records:
                r = records[j.uuid]
                s = r.get("state", "failed")
                failures.append({k: r.get(k) for k in ("material_id", "stage", "state", "reason", "directory",
                                                        "job_name")})
            elif j.uuid in fw:
                s = _FW_STATES.get(fw[j.uuid]["state"], "pending")
                if s == "failed":
                    failures.append({"material_id": j.material_id, "stage": j.stage, "state": "failed",
                                     "reason": fw[j.uuid].get("reason") or "FIZZLED",
                                     "directory": fw[j.uuid].get("launch_dir"), "job_name": j.name})
            elif j.uuid in running:  # a local run is working on it now
                s = "running"
            else:
                s = "pending"
            counts[s] += 1
            st = by_stage.setdefault(j.stage, {k: 0 for k in counts})
            st[s] += 1
        out.append(CampaignStatus(
            campaign=cdoc.campaign,
            campaign_type=cdoc.campaign_type,
            n_jobs=len(uuids),
            counts=counts,
            by_stage=by_stage,
            failures=failures,
            input_failures=[e.model_dump() for e in cdoc.input_failures],
            reference_note=cdoc.reference_note,
            completed_at=doc.get("_completed_at"),
            warnings=notes,
        ))
    return out
