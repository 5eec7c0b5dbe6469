"""Small jobflow jobs for the FireWorks tests. A module of its own so that the worker processes
(which get ``tests/`` on their PYTHONPATH) import the same functions the test serialised."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from jobflow import Flow, Response, job

from phonon_flows.makers.base import set_category


@job(data=["forces"])
def label(i: int, n_atoms: int = 64) -> dict:
    """Stands in for a DFT/reference labelling: a large array routed to the data store."""
    rng = np.random.default_rng(i)
    time.sleep(0.2)
    return {"i": i, "pid": os.getpid(), "forces": rng.normal(size=(n_atoms, 3))}


@job
def train(labels: list[dict]) -> dict:
    return {"n": len(labels), "pid": os.getpid(), "sum": float(sum(lab["i"] for lab in labels))}


@job
def mlip_phonon(model: dict, k: int) -> Response:
    """Replaced at run time by two jobs (they inherit this job's category)."""
    parts = [part_job(model["n"], k, j) for j in range(2)]
    return Response(replace=Flow(parts, output=[p.output for p in parts]))


@job
def part_job(n: int, k: int, j: int) -> dict:
    return {"n": n, "k": k, "j": j, "pid": os.getpid()}


@job
def benchmark(results: list) -> dict:
    return {"count": len(results), "pid": os.getpid()}


@job
def rendezvous(i: int, directory: str, wait_for: int = 2, patience_s: float = 120.0) -> dict:
    """Record this worker's pid, then wait until ``wait_for`` workers have run a job here."""
    folder = Path(directory)
    (folder / f"{os.getpid()}-{i}").touch()
    deadline = time.monotonic() + patience_s
    while len({p.name.split("-")[0] for p in folder.iterdir()}) < wait_for and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    return {"i": i, "pid": os.getpid()}


def campaign_flow(n_labels: int = 3) -> Flow:
    """cpu labels -> gpu train -> 2 gpu phonons (dynamic) -> benchmark (untagged: cpu by default)."""
    labels = [set_category(label(i), "cpu") for i in range(n_labels)]
    model = set_category(train([lab.output for lab in labels]), "gpu")
    phonons = [set_category(mlip_phonon(model.output, k), "gpu") for k in range(2)]
    bench = benchmark([p.output for p in phonons])
    return Flow([*labels, model, *phonons, bench], name="fw-campaign")
