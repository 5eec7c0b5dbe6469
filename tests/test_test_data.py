"""The tests' data ships with the repository, and missing data is an error under CI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REQUIRED_DATA, TEST_DATA


def test_data_ships_in_the_repository_with_its_license():
    assert TEST_DATA.is_relative_to(Path(__file__).resolve().parent)
    missing = [f for f in REQUIRED_DATA if not (TEST_DATA / f).is_file()]
    assert missing == []
    assert "Redistribution and use" in (TEST_DATA / "dft-phonons" / "LICENSE-phonopy").read_text()


def _run_with_missing_data(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    """pytest on a test that asks for ``shared_data``, with the data folder pointed elsewhere."""
    (tmp_path / "conftest.py").write_text(
        (Path(__file__).resolve().parent / "conftest.py").read_text()
        .replace('TEST_DATA = Path(__file__).resolve().parent / "data"', 'TEST_DATA = Path(__file__).resolve().parent / "nowhere"')
    )
    for name in ("mongoeco_server.py",):
        (tmp_path / name).write_text((Path(__file__).resolve().parent / name).read_text())
    (tmp_path / "test_uses_data.py").write_text(textwrap.dedent("""
        def test_uses_data(shared_data):
            assert shared_data.is_dir()
    """))
    import os

    env = {**os.environ, "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_missing_data_fails_under_ci_and_skips_otherwise(tmp_path):
    ci = _run_with_missing_data(tmp_path / "ci", "true") if (tmp_path / "ci").mkdir() is None else None
    assert ci.returncode != 0 and "test data missing under CI" in ci.stdout and "1 error" in ci.stdout, ci.stdout
    local = _run_with_missing_data(tmp_path / "local", "") if (tmp_path / "local").mkdir() is None else None
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
