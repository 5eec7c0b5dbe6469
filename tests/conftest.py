"""Shared pytest fixtures. Add yours below in their own section; do not rewrite others'."""

from __future__ import annotations

import os as _os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the test data shipped with the repository (real DFT phonon data in ``dft-phonons/``, with its license)
TEST_DATA = Path(__file__).resolve().parent / "data"
#: the files the tests read from it
REQUIRED_DATA = (
    "dft-phonons/LICENSE-phonopy",
    *(f"dft-phonons/{m}/{f}" for m in ("NaCl", "MgO", "NaCl-rd") for f in ("POSCAR-unitcell", "phonopy_disp.yaml",
                                                                           "FORCE_SETS", "BORN")),
    "dft-phonons/NaCl/vasprun.xml-001", "dft-phonons/NaCl/vasprun.xml-002",
    "dft-phonons/Si/POSCAR-unitcell", "dft-phonons/Si/phonopy_disp.yaml", "dft-phonons/Si/vasprun.xml",
)


def on_ci() -> bool:
    """True under CI (``CI=true``): missing data or servers are errors there, not skips."""
    return _os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_data(reason: str):
    """Skip a test for missing data on a developer's machine; fail it under CI."""
    if on_ci():
        pytest.fail(f"test data missing under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The test data folder ``tests/data`` (real DFT phonon data in ``dft-phonons/``).

    A missing file is a skip on a developer's machine and an error under ``CI=true``."""
    missing = [f for f in REQUIRED_DATA if not (TEST_DATA / f).is_file()]
    if missing:
        missing_data(f"{len(missing)} test data file(s) missing from {TEST_DATA}: {', '.join(missing[:3])}")
    return TEST_DATA


# ---------------------------------------------------------------------------------------------
# MongoDB wire-protocol server (mongoeco on SQLite) for tests that need a real MongoDB client path.
# `make test` sets PHONON_FLOWS_MONGOECO_PYTHON to .venv-mongoeco/bin/python (made by
# `make setup-mongoeco`). The server runs in its own process, bound to 127.0.0.1 on a free port,
# and is stopped by pid at the end of the session.
# ---------------------------------------------------------------------------------------------
import select as _select
import signal as _signal
import subprocess as _subprocess
import time as _time
import uuid as _uuid

MONGOECO_SERVER_SCRIPT = Path(__file__).resolve().parent / "mongoeco_server.py"


def _mongoeco_python() -> str | None:
    env = _os.environ.get("PHONON_FLOWS_MONGOECO_PYTHON")
    if env:
        return env
    local = REPO_ROOT / ".venv-mongoeco" / "bin" / "python"
    return str(local) if local.exists() else None


def _no_mongoeco(reason: str):
    if on_ci():
        pytest.fail(f"mongoeco server required under CI: {reason}")
    pytest.skip(reason)


def _stop_pid(proc: _subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    _os.kill(proc.pid, _signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except _subprocess.TimeoutExpired:
        _os.kill(proc.pid, _signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory) -> str:
    """URI (``directConnection=true``) of a mongoeco wire-protocol server running for this session.

    Use a fresh database name per test (see ``mongo_db_name``) to keep tests independent.
    """
    python = _mongoeco_python()
    if python is None:
        _no_mongoeco(
            "no mongoeco Python: set PHONON_FLOWS_MONGOECO_PYTHON or run `make setup-mongoeco` (needs Python >= 3.13)"
        )
    if not Path(python).exists():
        pytest.fail(f"PHONON_FLOWS_MONGOECO_PYTHON={python} does not exist (run `make setup-mongoeco`)")
    workdir = tmp_path_factory.mktemp("mongoeco")
    log = open(workdir / "server.stderr", "w")
    proc = _subprocess.Popen(
        [python, str(MONGOECO_SERVER_SCRIPT), "--db", str(workdir / "mongo.sqlite"), "--port", "0"],
        stdout=_subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=workdir,
    )
    try:
        uri = None
        deadline = _time.monotonic() + 60
        while uri is None and _time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = _select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                if line.startswith("MONGOECO READY "):
                    uri = line.split()[2]
        if uri is None:
            log.flush()
            err = (workdir / "server.stderr").read_text()[-2000:]
            pytest.fail(f"mongoeco server did not start (exit code {proc.poll()}):\n{err}")

        import pymongo

        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000)
        try:
            while True:
                try:
                    client.admin.command("ping")
                    break
                except pymongo.errors.PyMongoError:
                    if _time.monotonic() > deadline:
                        raise
                    _time.sleep(0.2)
        finally:
            client.close()
        yield uri
    finally:
        _stop_pid(proc)
        log.close()


@pytest.fixture
def mongo_db_name() -> str:
    """A database name no other test uses."""
    return f"test_{_uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------------------------
# A tiny trained MACE model (small preset, a few epochs on EMT-labelled Cu and Al supercells),
# trained once per session through MaceTrainingMaker and jobflow, for any test needing a model.
# ---------------------------------------------------------------------------------------------
from typing import NamedTuple as _NamedTuple


class TinyMaceModel(_NamedTuple):
    path: Path  # the model file
    sha256: str  # its sha256, also stored in `store` (data store)
    elements: list  # elements it knows: ["Al", "Cu"]
    doc: object  # the TrainingDoc (with model_b64)
    store: object  # the JobStore (embedded, file-backed) holding the training job's output
    structures: list  # the EMT-labelled training structures (ase Atoms)


@pytest.fixture(scope="session")
def tiny_mace_model(tmp_path_factory) -> TinyMaceModel:
    """Trains the ``small`` MACE preset once per session (about 30 s on 2 cores)."""
    from jobflow import run_locally

    from _mace_data import emt_structures, training_set_dict
    from phonon_flows.makers.training import MaceTrainingMaker
    from phonon_flows.schemas.training import MaceHyperparameters
    from phonon_flows.store import get_store

    root = tmp_path_factory.mktemp("tiny_mace")
    structures = emt_structures()
    store = get_store(store_dir=root / "store")
    maker = MaceTrainingMaker(hyperparameters=MaceHyperparameters.preset("small"), device="cpu", num_threads=2)
    job = maker.make(training_set_dict(structures))
    responses = run_locally(job, store=store, create_folders=True, root_dir=root / "jobs", ensure_success=True, log=False)
    doc = responses[job.uuid][1].output
    path = Path(doc.work_dir) / doc.model_file_name
    return TinyMaceModel(path, doc.model_sha256, list(doc.elements), doc, store, structures)
