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


async def _serve(db_path: str, host: str, port: int, dialect: str) -> None:
    from mongoeco.engines.sqlite import SQLiteEngine
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

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
