"""Start and stop the MongoDB wire-protocol test server (mongoeco on SQLite, the one the tests use)
for a benchmark: ``with mongoeco_server(folder) as uri: ...``."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "mongoeco_server.py"


def mongoeco_python() -> str:
    env = os.environ.get("PHONON_FLOWS_MONGOECO_PYTHON")
    local = REPO / ".venv-mongoeco" / "bin" / "python"
    python = env or (str(local) if local.exists() else None)
    if not python or not Path(python).exists():
        raise SystemExit("no mongoeco Python: set PHONON_FLOWS_MONGOECO_PYTHON or run `make setup-mongoeco`")
    return python


@contextlib.contextmanager
def mongoeco_server(folder: Path, timeout: float = 60):
    """URI (directConnection=true) of a mongoeco server on ``folder/mongo.sqlite``; stopped by pid after."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / "server.stderr", "w")
    proc = subprocess.Popen([mongoeco_python(), str(SERVER), "--db", str(folder / "mongo.sqlite"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=folder)
    try:
        uri, deadline = None, time.monotonic() + timeout
        while uri is None and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                if line.startswith("MONGOECO READY "):
                    uri = line.split()[2]
        if uri is None:
            raise RuntimeError(f"mongoeco did not start: {(folder / 'server.stderr').read_text()[-2000:]}")
        yield uri
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log.close()


def sqlite_bytes(folder: Path) -> int:
    """Bytes of the server's SQLite files (database + WAL)."""
    return sum(p.stat().st_size for p in Path(folder).glob("mongo.sqlite*"))
