"""Deterministic job keys and uuids of a campaign.

Campaign flows are STATIC: every job exists when the flow is made, and every job has a
deterministic uuid derived from (campaign, material structure hash, stage, settings and the keys
of the jobs it depends on). Rerunning a campaign on the same store therefore finds its own
finished outputs (phonon_flows.runner.run_campaign skips them), never writes a second document
for the same work, and changing a setting changes the keys of exactly the jobs it affects.
"""

from __future__ import annotations

import hashlib as _hashlib
import json as _json
import uuid as _uuidlib
from typing import Any

from jobflow import Flow, Job
from jobflow.core.reference import OutputReference
from monty.json import jsanitize

#: namespace of the deterministic job uuids (uuid5)
JOB_UUID_NAMESPACE = _uuidlib.UUID("7a0f1c52-3b1e-4d0a-9a57-4f8f3f0c6e21")

#: the stages of a campaign, in flow order (job metadata ``phonon_flows.stage``)
CAMPAIGN_STAGES = (
    "campaign", "relax", "perturb", "label", "training-set", "train", "phonon-reference", "phonon-mlip", "phonon-batch",
    "benchmark",
)


#: settings that say where and how fast a job runs, not what it computes: left out of the job keys,
#: so a campaign made from Python and from the command line (``--device``) has the same jobs
RUN_ONLY_SETTINGS = frozenset({"device", "num_threads", "batch_size", "num_workers", "num_gpus", "progress"})


def _strip_versions(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_versions(v) for k, v in obj.items() if k != "@version" and k not in RUN_ONLY_SETTINGS}
    if isinstance(obj, (list, tuple)):
        return [_strip_versions(v) for v in obj]
    return obj


def settings_payload(obj: Any) -> Any:
    """A JSON-able form of makers/settings for hashing (package versions and the run-only settings
    :data:`RUN_ONLY_SETTINGS` left out, so that an upgrade or another device alone does not
    invalidate finished work)."""
    return _strip_versions(jsanitize(obj, strict=True, enum_values=True, allow_bson=False))


def settings_hash(*parts: Any) -> str:
    """sha256 of the JSON form of ``parts`` (makers, dicts, upstream keys)."""
    text = _json.dumps(settings_payload(list(parts)), sort_keys=True, default=str)
    return _hashlib.sha256(text.encode()).hexdigest()


def job_key(campaign: str, material_hash: str | None, stage: str, settings: str) -> str:
    """The key of one job: sha256 of (campaign, material structure hash, stage, settings hash)."""
    text = _json.dumps([campaign, material_hash, stage, settings])
    return _hashlib.sha256(text.encode()).hexdigest()


def key_uuid(key: str) -> str:
    """The job uuid of a key (uuid5 in :data:`JOB_UUID_NAMESPACE`)."""
    return str(_uuidlib.uuid5(JOB_UUID_NAMESPACE, key))


def _remap(obj: Any, mapping: dict[str, str]) -> Any:
    """``obj`` with every OutputReference to a uuid in ``mapping`` pointed at the new uuid."""
    if isinstance(obj, OutputReference):
        if obj.uuid in mapping:
            return OutputReference(mapping[obj.uuid], attributes=obj.attributes, output_schema=obj.output_schema)
        return obj
    if isinstance(obj, list):
        return [_remap(v, mapping) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_remap(v, mapping) for v in obj)
    if isinstance(obj, dict):
        return {k: _remap(v, mapping) for k, v in obj.items()}
    return obj


def _walk(flow: Flow, prefix: str, mapping: dict[str, str], jobs: list[Job], flows: list[Flow]) -> None:
    mapping[flow.uuid] = key_uuid(f"{prefix}/flow")
    flows.append(flow)
    for i, item in enumerate(flow.jobs):
        if isinstance(item, Flow):
            _walk(item, f"{prefix}/{i}", mapping, jobs, flows)
        else:
            mapping[item.uuid] = key_uuid(f"{prefix}/{i}")
            jobs.append(item)


def assign_key(obj: Job | Flow, key: str) -> Job | Flow:
    """Give a Job (or every job of a Flow made by another maker) the deterministic uuid of ``key``.

    Call it right after the job or flow is made, before its output is handed to other jobs: the
    job's ``uuid`` and ``output`` reference change (``Job.set_uuid``); inside a Flow every job gets
    ``uuid5(key/position)``, and the references between them, their hosts and the flow's output
    follow.
    """
    if isinstance(obj, Job):
        obj.set_uuid(key_uuid(key))
        return obj
    mapping: dict[str, str] = {}
    jobs: list[Job] = []
    flows: list[Flow] = []
    _walk(obj, key, mapping, jobs, flows)
    for j in jobs:
        j.function_args = _remap(j.function_args, mapping)
        j.function_kwargs = _remap(j.function_kwargs, mapping)
        j.hosts = [mapping.get(h, h) for h in j.hosts]
        j.set_uuid(mapping[j.uuid])
    for f in flows:
        f.output = _remap(f.output, mapping)
        f.hosts = [mapping.get(h, h) for h in f.hosts]
        f.uuid = mapping[f.uuid]
    return obj


def jobs_of(obj: Job | Flow) -> list[Job]:
    if isinstance(obj, Job):
        return [obj]
    out: list[Job] = []
    for item in obj.jobs:
        out.extend(jobs_of(item))
    return out



