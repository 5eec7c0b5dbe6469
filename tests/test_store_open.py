"""The embedded store opens safely while another process creates or opens it.

montydb writes its configuration files by truncating and rewriting them, and creates a
collection's SQLite file before its table. The race windows are microseconds wide, so the
worker processes here widen them (a pause inside each write, as on a loaded machine): a
reader that comes in between fails on an unprotected store ("Empty module name",
"no such table: documents")."""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback

import pytest

from phonon_flows.store import get_store

ROUNDS = 6
REOPENS = 10
PAUSE_S = 0.05


def _widen_montydb_race_windows() -> None:
    """Pause between truncating and writing montydb's configuration, and between creating a
    collection's file and its table."""
    import builtins

    import montydb.configure as configure
    from montydb.storage import sqlite

    class SlowFile:
        def __init__(self, f):
            self._f = f

        def write(self, text):
            time.sleep(PAUSE_S)
            return self._f.write(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __getattr__(self, name):
            return getattr(self._f, name)

    def slow_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return SlowFile(f) if "w" in mode else f

    configure.open = slow_open
    create_table = sqlite.SQLiteKVEngine.create_table

    def slow_create_table(self, db_file):
        with self._connect(db_file):
            pass  # the file exists now, without its table
        time.sleep(PAUSE_S)
        return create_table(self, db_file)

    sqlite.SQLiteKVEngine.create_table = slow_create_table


def _open_and_write(base: str, worker: int, barrier, errors) -> None:
    """Each round: wait for the other process, then both open a new store folder at once,
    write a document and count it; then both reopen one store over and over."""
    _widen_montydb_race_windows()
    try:
        for r in range(ROUNDS):
            barrier.wait(timeout=60)
            if worker == 1:
                time.sleep(PAUSE_S / 2)  # come in while the other process is creating the store
            store = get_store(store_dir=f"{base}/s{r}", connect=True)
            store.docs_store.update({"uuid": f"{r}-{worker}", "index": 1, "worker": worker}, key="uuid")
            assert store.docs_store.count({"uuid": f"{r}-{worker}"}) == 1
            store.close()
        barrier.wait(timeout=60)
        for _ in range(REOPENS):
            store = get_store(store_dir=f"{base}/s0", connect=True)
            store.docs_store.count()
            store.close()
    except Exception:  # noqa: BLE001 - reported to the parent
        errors.put(f"worker {worker}: {traceback.format_exc()}")
        barrier.abort()


def test_two_processes_open_a_new_embedded_store_at_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    errors = ctx.Queue()
    procs = [ctx.Process(target=_open_and_write, args=(str(tmp_path), w, barrier, errors)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, "\n".join(found)
    assert all(p.exitcode == 0 for p in procs)
    for r in range(ROUNDS):
        store = get_store(store_dir=tmp_path / f"s{r}", connect=True)
        assert sorted(d["worker"] for d in store.docs_store.query({})) == [0, 1]
        store.close()


def test_test_server_still_refuses_duplicate_ids_after_its_insert_fast_path(mongo_uri, mongo_db_name):
    """tests/mongoeco_server.py skips mongoeco's scan of every stored document on insert for ids
    with no number in them (ObjectId, str): duplicates must still be refused, numeric ids that are
    equal but typed differently (1 and 1.0) too, and a unique index still holds."""
    import pymongo
    from bson import ObjectId
    from pymongo.errors import DuplicateKeyError

    coll = pymongo.MongoClient(mongo_uri)[mongo_db_name]["ids"]
    oid = ObjectId()
    coll.insert_one({"_id": oid})
    coll.insert_one({"_id": "a"})
    coll.insert_one({"_id": 1})
    for dup in (oid, "a", 1.0):
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"_id": dup})
    assert coll.count_documents({}) == 3
    chunks = pymongo.MongoClient(mongo_uri)[mongo_db_name]["chunks"]
    chunks.create_index([("files_id", 1), ("n", 1)], unique=True)
    chunks.insert_one({"files_id": 7, "n": 0})
    with pytest.raises(DuplicateKeyError):
        chunks.insert_one({"files_id": 7, "n": 0})
    assert chunks.count_documents({}) == 1
