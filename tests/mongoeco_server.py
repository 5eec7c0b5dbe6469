"""A MongoDB wire-protocol server for the tests: mongoeco on SQLite, 127.0.0.1, until killed.

Run with a Python >= 3.13 that has ``mongoeco[wire]`` installed (``make setup-mongoeco`` makes
``.venv-mongoeco``)::

    .venv-mongoeco/bin/python tests/mongoeco_server.py --db /some/dir/mongo.sqlite [--port 0]

With ``--port 0`` (the default) the OS picks a free port, so there is no race between picking a
port and binding it. Once the server listens it prints one line to stdout::

    MONGOECO READY mongodb://127.0.0.1:<port>/?directConnection=true

and then serves until SIGTERM/SIGINT (or SIGKILL; the SQLite file is then left as it is).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def _skip_id_scan_for_exact_ids(engine_cls) -> None:
    """Make an insert cost O(1) instead of O(collection size), as on MongoDB.

    mongoeco (4.11) checks each inserted document's ``_id`` against every stored document of the
    collection, decoding each (``scan_payload_id=True`` on every insert), so that numeric ids that
    are equal but typed differently (1 and 1.0) collide. For an ``_id`` with no number in it
    (ObjectId, string: what pymongo, GridFS and maggma write) equality is exact, and the primary-key
    lookup mongoeco does first already decides it; the scan is skipped for those ids only. Without
    this, a store growing by GridFS chunks makes each write slower: measured, 37 ms per 200-kB insert
    into an empty collection and 360 ms at 500 documents.
    """
    from mongoeco.core.identity import id_contains_numeric_value

    original = engine_cls._validate_document_against_unique_indexes
    if getattr(original, "_exact_id_fast_path", False):
        return

    def validate(self, db_name, coll_name, document, *, exclude_storage_key=None, skip_id_check=False,
                 scan_payload_id=False):
        if scan_payload_id and "_id" in document and not id_contains_numeric_value(document["_id"]):
            scan_payload_id = False
        return original(self, db_name, coll_name, document, exclude_storage_key=exclude_storage_key,
                        skip_id_check=skip_id_check, scan_payload_id=scan_payload_id)

    validate._exact_id_fast_path = True
    engine_cls._validate_document_against_unique_indexes = validate


async def _serve(db_path: str, host: str, port: int, dialect: str) -> None:
    from mongoeco.engines.sqlite import SQLiteEngine
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    _skip_id_scan_for_exact_ids(SQLiteEngine)
    engine = SQLiteEngine(db_path)
    proxy = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port, mongodb_dialect=dialect)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = await proxy.start()
    print(f"MONGOECO READY mongodb://{address.host}:{address.port}/?directConnection=true", flush=True)
    try:
        await stop.wait()
    finally:
        await proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="SQLite file holding the databases")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: let the OS pick a free port")
    parser.add_argument("--dialect", default="7.0", help="MongoDB dialect mongoeco emulates")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.db, args.host, args.port, args.dialect))
    return 0


if __name__ == "__main__":
    sys.exit(main())
