"""Small utilities shared by the makers (no science here)."""

from __future__ import annotations

from jobflow import Flow, Job

#: FireWorks categories: training and MLIP phonons on GPU workers, DFT and reference engines on CPU
CATEGORIES = ("gpu", "cpu")


def set_category(job_or_flow: Job | Flow, category: str) -> Job | Flow:
    """Tag a job (or every job of a flow) with a FireWorks category (``_category`` in its spec)."""
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, not {category!r}")
    job_or_flow.update_config({"manager_config": {"_category": category}}, dynamic=True)
    return job_or_flow
