#!/usr/bin/env python
"""Does a store write get slower as the store grows? Measured on the MongoDB wire-protocol test
server (mongoeco, started as the tests start it: ``tests/mongoeco_server.py``).

1. Single inserts of 200-kB documents (a GridFS chunk's size) into a plain collection and into one
   with a unique (``files_id``, ``n``) index, as GridFS's ``chunks`` has: ms per insert, by
   hundreds of documents already there.
2. The screening path's writes (``write_phonon_docs``: documents to MongoStore, large data to
   GridFS) of real PhononDocs (EMT, 125-128-atom supercells, every copy with its large data), 8
   materials per write as a pack writes them: seconds per write as the store grows.

Run ``python benchmarks/store_write_growth.py`` (``--inserts 500 --materials 240``); writes
``benchmarks/results/store_write_growth.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _mongoeco import mongoeco_server  # noqa: E402


def insert_latencies(uri: str, n: int, step: int = 100) -> dict[str, list[float]]:
    import pymongo

    db = pymongo.MongoClient(uri)["growth"]
    blob = b"x" * 200_000
    out = {}
    for name, unique in (("plain", False), ("unique index (files_id, n)", True)):
        coll = db[name.split()[0]]
        if unique:
            coll.create_index([("files_id", 1), ("n", 1)], unique=True)
        times = []
        for k in range(n):
            t0 = time.perf_counter()
            coll.insert_one({"files_id": k, "n": 0, "data": blob})
            times.append(time.perf_counter() - t0)
        out[name] = [round(1e3 * float(np.mean(times[i:i + step])), 1) for i in range(0, n, step)]
        print(f"  {name}: ms per insert by {step}s of documents: {out[name]}", flush=True)
    return out


def write_latencies(uri: str, n: int, chunk: int = 8) -> list[float]:
    import store_scale

    from phonon_flows.makers.batched_phonons import write_phonon_docs
    from phonon_flows.store import campaign_metadata, get_store

    docs = store_scale.synthetic_docs(store_scale.emt_templates(), 0, n, n, np.random.default_rng(0))
    store = get_store(mongo_uri=uri, database="growth_writes")
    store.connect()
    out = []
    for k in range(0, n, chunk):
        part = docs[k:k + chunk]
        uuids = [str(uuid.UUID(int=i + 1)) for i in range(k, k + len(part))]
        meta = [campaign_metadata("growth", d.material_id, "phonon-mlip") for d in part]
        t0 = time.perf_counter()
        write_phonon_docs(store, part, uuids, meta, [f"phonons {d.material_id}" for d in part])
        out.append(round(time.perf_counter() - t0, 3))
        print(f"  {k + len(part)} materials stored: {out[-1]:.2f} s for the last {len(part)}", flush=True)
    store.close()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inserts", type=int, default=500, help="single inserts per collection (default 500)")
    p.add_argument("--materials", type=int, default=240, help="PhononDocs written, 8 per write (default 240)")
    p.add_argument("--out", default=str(HERE / "results" / "store_write_growth.json"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="store_write_growth_"))
    result = {"benchmark": "store_write_growth",
              "command": "python benchmarks/store_write_growth.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "server": "mongoeco via tests/mongoeco_server.py (with its insert fast path for exact ids)"}
    with mongoeco_server(work / "inserts") as uri:
        print("single 200-kB inserts", flush=True)
        result["ms_per_insert_by_hundreds"] = insert_latencies(uri, args.inserts)
    with mongoeco_server(work / "writes") as uri:
        print("write_phonon_docs, 8 materials per write", flush=True)
        result["s_per_write_of_8_materials"] = write_latencies(uri, args.materials)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
