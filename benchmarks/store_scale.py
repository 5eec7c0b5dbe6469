#!/usr/bin/env python
"""What storing and querying many screened materials costs, and the DFT cost the recipe avoids.

1. **Store footprint and query latency.** Real PhononDocs (template materials computed here with
   ASE's EMT, or taken from a store with ``--templates DIR``) are copied into N synthetic
   materials (new material ids, thermal values and stability varied, two campaigns) and written
   the way the screening path writes them (:func:`phonon_flows.makers.batched_phonons.write_phonon_docs`:
   one JobStore update per chunk, large fields to the ``data`` store). Both stores: the embedded
   one (MontyStore on SQLite) and MongoStore + GridFS on the MongoDB wire-protocol test server
   (mongoeco, as tests/conftest.py runs it). Reported: documents and bytes per material in the
   docs store and the data store separately (measured on the first ``--full-data`` materials, which
   carry their large data; the others carry the documents only, so 10,000 copies do not need 10 GB),
   write time, and the latency of ``PhononResults.find`` (filters + sort + limit, by id, by
   chemsys), ``count`` and ``to_dataframe`` at 1,000 and 10,000 materials, before and after
   ``ensure_indexes``.
2. **DFT cost avoided** (``index.json`` of phonondb, all materials and sample-1000): the recipe's
   6 perturbed supercells per training material against the finite-displacement supercells
   phonondb computed for the same materials; a screened material needs no DFT at all.
3. **A paper estimate for 100,000 materials** on a cluster, from the measured numbers (this
   script's, and ``benchmarks/results/screen_local_*.json`` / ``screen_fireworks_*.json`` when
   present): Fireworks, store size, query latency, share of time in the MLIP.

Run ``python benchmarks/store_scale.py`` (``--sizes 1000,10000``); writes
``benchmarks/results/store_scale.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _mongoeco import mongoeco_server, sqlite_bytes  # noqa: E402
from screen_sample import DATA  # noqa: E402

CAMPAIGNS = ("scale", "scale-other")
RECIPE_SUPERCELLS = 6


def emt_templates() -> list[Any]:
    """Real PhononDocs of fcc/hcp metals with ASE's EMT (125-128-atom supercells)."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    from phonon_flows.engines import get_engine
    from phonon_flows.makers.batched_phonons import phonons_for_many
    from phonon_flows.makers.phonons import phonon_settings

    structures, smats = [], []
    for el, a in (("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52), ("Pd", 3.89), ("Ag", 4.09), ("Pt", 3.92), ("Au", 4.08)):
        structures.append(AseAtomsAdaptor.get_structure(bulk(el, "fcc", a=a)))
        smats.append([[5, 0, 0], [0, 5, 0], [0, 0, 5]])
    structures.append(AseAtomsAdaptor.get_structure(bulk("Cu", "hcp", a=2.56, c=4.18)))
    smats.append([[4, 0, 0], [0, 4, 0], [0, 0, 4]])
    ids = [f"{s.composition.reduced_formula}-{i}" for i, s in enumerate(structures)]
    docs = phonons_for_many(structures, get_engine("emt"), phonon_settings(total_dos=False), smats, ids)
    return [d.model_dump() for d in docs if not d.failed]


def store_templates(folder: str) -> list[dict[str, Any]]:
    """PhononDocs (with their large data loaded) from an embedded store."""
    from phonon_flows.results import PhononResults
    from phonon_flows.store import get_store

    with PhononResults(get_store(store_dir=folder)) as res:
        docs = res.find(load=True)
    for d in docs:
        d.pop("_job", None)
    return docs


def synthetic_docs(templates: list[dict[str, Any]], start: int, stop: int, full_data: int, rng) -> list[dict]:
    """Copies ``start..stop-1`` of the templates: new ids, thermal values x (1 +- 10 %), stability
    ~70 % stable; large fields kept for the first ``full_data`` copies only."""
    from phonon_flows.schemas.phonon import PHONON_DATA_FIELDS, PhononDoc

    out = []
    for i in range(start, stop):
        d = copy.deepcopy(templates[i % len(templates)])
        d["material_id"] = f"syn-{i:06d}"
        d["chemsys"] = d.get("chemsys") or ""
        for t in (d.get("thermal") or {}).values():
            for k in ("A_vib_meV_per_atom", "Cv_J_per_K_mol", "S_J_per_K_mol"):
                if t.get(k) is not None:
                    t[k] = float(t[k]) * (1 + 0.1 * rng.standard_normal())
        stable = bool(rng.random() < 0.7)
        d["dynamically_stable"] = stable
        d["min_frequency_THz"] = float(abs(rng.normal(0, 0.1)) if stable else -rng.uniform(0.6, 3))
        if i >= full_data:
            for f in PHONON_DATA_FIELDS:
                d[f] = None
        out.append(PhononDoc.model_validate({k: v for k, v in d.items() if not k.startswith("@")}))
    return out


def write(store: Any, docs: list, start: int, chunk: int = 500, bulk: bool = False) -> float:
    """Write the copies ``start..`` the way the screening path does (``write_phonon_docs``), or,
    with ``bulk``, as ready-made output documents straight into the docs collection
    (``insert_many``: only to fill the store to size faster; these copies carry no large data)."""
    from monty.json import jsanitize

    from phonon_flows.makers.batched_phonons import write_phonon_docs
    from phonon_flows.store import campaign_metadata

    t0 = time.perf_counter()
    for k in range(0, len(docs), chunk):
        part = docs[k:k + chunk]
        idx = range(start + k, start + k + len(part))
        uuids = [str(uuid.UUID(int=i + 1)) for i in idx]
        meta = [campaign_metadata(CAMPAIGNS[i % 2], d.material_id, "phonon-mlip") for i, d in zip(idx, part)]
        names = [f"phonons {d.material_id}" for d in part]
        if bulk:
            store.docs_store._collection.insert_many([
                {"uuid": u, "index": 1, "output": jsanitize(d, strict=True, enum_values=True, allow_bson=True),
                 "completed_at": "", "metadata": m, "hosts": [], "name": nm}
                for d, u, m, nm in zip(part, uuids, meta, names)])
        else:
            write_phonon_docs(store, part, uuids, meta, names)
    return time.perf_counter() - t0


def footprint(store: Any, n_full: int) -> dict[str, Any]:
    """Documents and bytes per material in the docs store and the data store (first ``n_full``)."""
    import bson

    crit = {"output.material_id": {"$in": [f"syn-{i:06d}" for i in range(n_full)]}}
    docs = list(store.docs_store.query(crit))
    blob_ids = [r["blob_uuid"] for d in docs for r in _refs(d.get("output"))]
    data = store.additional_stores["data"]
    kind = type(data).__name__
    if kind == "GridFSStore":
        files, chunks = data._files_collection, data._chunks_collection
        metas = list(files.find({"metadata.blob_uuid": {"$in": blob_ids}}, {"length": 1}))
        n_chunks = chunks.count_documents({"files_id": {"$in": [m["_id"] for m in metas]}})
        data_docs, data_bytes = len(metas), sum(int(m.get("length", 0)) for m in metas)
    else:
        blobs = list(data.query({"blob_uuid": {"$in": blob_ids}}))
        data_docs, data_bytes, n_chunks = len(blobs), sum(len(bson.encode(b)) for b in blobs), None
    n = max(1, len(docs))
    if not docs:  # --full-data 0: no copy keeps its large data, so there is nothing to measure
        return {"docs_store": type(store.docs_store).__name__, "data_store": kind, "materials_measured": 0,
                "note": "not measured: no copy kept its large data (--full-data 0)"}
    return {"docs_store": type(store.docs_store).__name__, "data_store": kind,
            "materials_measured": len(docs),
            "docs_store_documents_per_material": len(docs) / n,
            "docs_store_bytes_per_material": sum(len(bson.encode(d)) for d in docs) / n,
            "data_store_documents_per_material": data_docs / n,
            "data_store_bytes_per_material": data_bytes / n,
            "gridfs_chunks_per_material": (n_chunks / n) if n_chunks is not None else None}


def _refs(obj: Any):
    if isinstance(obj, dict):
        if "blob_uuid" in obj and "store" in obj:
            yield obj
        else:
            for v in obj.values():
                yield from _refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _refs(v)


def timed(fn, repeat: int = 3) -> dict[str, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    n = len(result) if hasattr(result, "__len__") else result
    return {"median_s": statistics.median(times), "min_s": min(times), "rows": n}


def latencies(store: Any, n: int) -> dict[str, Any]:
    from phonon_flows.results import PhononResults

    res = PhononResults(store)
    probe = f"syn-{n // 2:06d}"
    queries = {
        "find stable, A_vib<=0 at 300 K, sorted by S_vib, limit 50": (
            lambda: res.find(campaign="scale", stable=True, A_vib=(None, 0.0), sort="-S_vib", limit=50), 3),
        "find by material_id": (lambda: res.find(material_id=probe), 3),
        "find chemsys Cu (all of them)": (lambda: res.find(chemsys="Cu"), 3),
        "count campaign": (lambda: res.count(campaign="scale"), 3),
        "to_dataframe campaign (half the materials)": (lambda: res.to_dataframe(campaign="scale"), 1),
    }
    out = {}
    for name, (query, repeat) in queries.items():  # one line each, so that a slow query is named as it runs
        print(f"    {name} ...", end=" ", flush=True)
        out[name] = timed(query, repeat=repeat)
        print(f"{out[name]['median_s'] * 1e3:.1f} ms", flush=True)
    return out


def scale_run(kind: str, store: Any, templates: list[dict], sizes: list[int], full_data: int,
              db_folder: Path | None) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"sizes": {}}
    have = 0
    store.connect()
    for n in sizes:
        docs = synthetic_docs(templates, have, n, full_data, rng)
        # the embedded store: every size through the screening path's writes (keyed upserts, cost
        # independent of the store's size); the server: the first size, the rest bulk-filled (faster)
        bulk = have > 0 and kind != "embedded"
        w = write(store, docs, have, bulk=bulk)
        out["sizes"][str(n)] = rec = {"write_s": w, "write_materials_per_s": (n - have) / w if w else None,
                                      "written_by": "insert_many (fill)" if bulk else "write_phonon_docs"}
        have = n
        print(f"  {kind}: {n} materials written ({w:.1f} s); timing queries", flush=True)
        rec["no_indexes"] = latencies(store, n)
        from phonon_flows.results import PhononResults

        t0 = time.perf_counter()
        made = PhononResults(store).ensure_indexes()
        rec["ensure_indexes_s"] = time.perf_counter() - t0
        rec["indexes_created"] = sum(bool(v) for v in made.values())
        rec["indexes_asked"] = len(made)
        rec["with_indexes"] = latencies(store, n)
        if db_folder is not None:
            rec["server_sqlite_bytes"] = sqlite_bytes(db_folder)
        if kind == "embedded":
            rec["sqlite_bytes"] = sum(p.stat().st_size for p in Path(store.docs_store.database_path).rglob("*")
                                      if p.is_file()) if hasattr(store.docs_store, "database_path") else None
        # drop the indexes again for the next size's "no indexes" timing
        _drop_indexes(store)
    out["footprint"] = footprint(store, min(full_data, sizes[0]))
    store.close()
    return out


def _drop_indexes(store: Any) -> None:
    try:
        store.docs_store._collection.drop_indexes()
    except Exception:  # noqa: BLE001 - the embedded store (montydb) has no indexes to drop
        pass


def dft_cost() -> dict[str, Any]:
    rows = json.loads((DATA / "index.json").read_text())
    sample = {p.name for p in (DATA / "sample-1000").glob("*.tar.lzma")}
    out = {}
    for label, sel in (("all phonondb", rows), ("sample-1000", [r for r in rows if r["file"] in sample])):
        fd = np.array([r["displacements"] for r in sel], dtype=float)
        atoms = np.array([r["atoms_supercell"] for r in sel], dtype=float)
        out[label] = {
            "materials": len(sel),
            "fd_supercells_total": int(fd.sum()), "recipe_supercells_total": RECIPE_SUPERCELLS * len(sel),
            "fd_supercells_per_material_mean": float(fd.mean()),
            "fd_supercells_percentiles_10_50_90": [float(x) for x in np.percentile(fd, [10, 50, 90])],
            "ratio_fd_over_recipe": float(fd.sum() / (RECIPE_SUPERCELLS * len(sel))),
            "share_of_materials_where_fd_needs_fewer_than_6": float(np.mean(fd < RECIPE_SUPERCELLS)),
            "recipe_saves_supercells_total": int(fd.sum() - RECIPE_SUPERCELLS * len(sel)),
            "fd_atom_supercells_total": float((fd * atoms).sum()),
            "recipe_atom_supercells_total": float((RECIPE_SUPERCELLS * atoms).sum()),
            "note": "a training material costs 6 DFT supercells (recipe) instead of its finite-displacement set; "
                    "a screened material costs no DFT at all (the model replaces all of its FD supercells)",
        }
    return out


def _largest_run(pattern: str) -> tuple[Path, dict[str, Any]] | None:
    """The recorded screening run with the most materials: a single run or a combined report of all
    its parts (a lone part, or a combination still missing parts, is passed over)."""
    best = None
    for f in sorted((HERE / "results").glob(pattern)):
        rep = json.loads(f.read_text())
        part = rep.get("part")
        if part and not part.get("complete"):
            continue
        if best is None or rep.get("n_materials", 0) > best[1].get("n_materials", 0):
            best = (f, rep)
    return best


def paper_estimate(results: dict[str, Any]) -> dict[str, Any]:
    """100,000 materials on a cluster, from the measured numbers (each input named): the largest
    local and FireWorks screening runs in ``results/`` and the store measurements in ``results["stores"]``."""
    n = 100_000
    est: dict[str, Any] = {"materials": n, "inputs": {}}
    batch_size = 32
    est["fireworks"] = {"phonon_fireworks (packs of 32)": int(np.ceil(n / batch_size)), "campaign_records": 1,
                        "total": int(np.ceil(n / batch_size)) + 1,
                        "note": "one Firework per pack of 32 materials (the default screening path), plus the "
                                "campaign record; per-material jobs would make 100,001"}
    mongo = results["stores"].get("mongoeco", {}).get("footprint", {})
    if mongo.get("materials_measured"):
        docs_b, data_b = mongo["docs_store_bytes_per_material"], mongo["data_store_bytes_per_material"]
        est["store"] = {"docs_store_GB": docs_b * n / 1e9, "gridfs_GB": data_b * n / 1e9,
                        "per_material_bytes": {"docs": docs_b, "gridfs": data_b},
                        "note": "from the synthetic copies' templates; real screening documents of "
                                "multi-atom cells are larger, see screen_local_*.json store bytes"}
    local = _largest_run("screen_local_*.json")
    if local:
        f, rep = local
        bt = rep["result"]["batch_timings_s"]
        per = rep["result"]["store"]
        machine = rep.get("machine") or {}
        if isinstance(machine, list):  # a combined report: one record per part
            machine = machine[0]
        threads = int(machine.get("torch_threads") or 1)
        est["inputs"]["local_run"] = f.name
        est["store_from_real_screening_docs"] = {
            "materials": rep["n_materials"],
            "docs_store_GB": per["docs_bytes_per_material"] * n / 1e9,
            "data_store_GB_uncompressed": per["data_bytes_per_material"] * n / 1e9}
        sec_per_material = rep["wall_s"] / rep["n_materials"]
        est["mlip"] = {"share_of_batch_job_time_in_force_calls": bt.get("forces_share_of_batch_jobs"),
                       "wall_seconds_per_material_measured": sec_per_material,
                       "torch_threads": threads,
                       "cpu_core_hours_for_100k": sec_per_material * threads * n / 3600,
                       "note": f"{rep['n_materials']} materials on {threads} CPU thread(s) of this machine, the "
                               f"model {rep.get('model', {}).get('hidden_irreps')} in "
                               f"{rep.get('model', {}).get('dtype')}; the same work on N nodes divides by N"}
    fw = _largest_run("screen_fireworks_*.json")
    if fw:
        f, rep = fw
        est["inputs"]["fireworks_run"] = f.name
        over = rep["result"].get("overhead_share_of_total")
        if over is not None:
            est["fireworks_overhead_share_measured"] = over
        per = rep["result"].get("store", {})
        if per.get("data_bytes_per_material"):
            est["store_from_fireworks_run"] = {
                "materials": rep["n_materials"],
                "mongostore_GB": per["docs_bytes_per_material"] * n / 1e9,
                "gridfs_GB": per["data_bytes_per_material"] * n / 1e9,
                "note": "MongoStore documents and GridFS files (zlib-compressed) of the FireWorks run"}
    for kind, rec in results["stores"].items():
        sizes = rec.get("sizes", {})
        if "1000" in sizes and "10000" in sizes:
            lat = {}
            for label in ("no_indexes", "with_indexes"):
                q = "find stable, A_vib<=0 at 300 K, sorted by S_vib, limit 50"
                a, b = sizes["1000"][label][q]["median_s"], sizes["10000"][label][q]["median_s"]
                slope = (b - a) / 9000
                lat[label] = {"filtered_find_s_at_1k": a, "at_10k": b,
                              "linear_extrapolation_s_at_100k": b + slope * 90_000}
                q2 = "find by material_id"
                a2, b2 = sizes["1000"][label][q2]["median_s"], sizes["10000"][label][q2]["median_s"]
                lat[label]["by_id_s_at_1k"], lat[label]["by_id_s_at_10k"] = a2, b2
                lat[label]["by_id_linear_extrapolation_s_at_100k"] = b2 + (b2 - a2) / 9000 * 90_000
            est.setdefault("query_latency", {})[kind] = lat
    return est


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000", help="materials in the store, increasing (default 1000,10000)")
    p.add_argument("--full-data", type=int, default=200, help="copies that keep their large data (default 200)")
    p.add_argument("--templates", default=None, help="embedded store folder to take PhononDocs from (default: EMT)")
    p.add_argument("--stores", default="embedded,mongoeco")
    p.add_argument("--out", default=str(HERE / "results" / "store_scale.json"))
    p.add_argument("--estimate-only", nargs="+", default=None, metavar="STORE_SCALE_JSON",
                   help="no measurement: the 100,000-material estimate from these store_scale reports and the "
                        "largest screening runs in results/, written to --out")
    args = p.parse_args(argv)
    if args.estimate_only:
        return estimate_only([Path(f) for f in args.estimate_only], Path(args.out), argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    from phonon_flows.store import get_store

    t0 = time.perf_counter()
    templates = store_templates(args.templates) if args.templates else emt_templates()
    print(f"{len(templates)} template PhononDocs ({'from ' + args.templates if args.templates else 'EMT'}, "
          f"{time.perf_counter() - t0:.1f} s)", flush=True)
    results: dict[str, Any] = {"benchmark": "store_scale", "command": "python benchmarks/store_scale.py "
                               + " ".join(argv if argv is not None else sys.argv[1:]),
                               "templates": {"source": args.templates or "EMT (fcc/hcp metals, 125-128-atom supercells)",
                                             "n": len(templates),
                                             "natom_supercell": sorted({d.get("natom_supercell") for d in templates})},
                               "full_data_copies": args.full_data, "stores": {}}
    work = Path(tempfile.mkdtemp(prefix="store_scale_"))
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    if "embedded" in kinds:
        print("embedded store (MontyStore on SQLite)", flush=True)
        results["stores"]["embedded"] = scale_run("embedded", get_store(store_dir=work / "embedded"), templates,
                                                  sizes, args.full_data, None)
    if "mongoeco" in kinds:
        print("MongoStore + GridFS on the wire-protocol test server (mongoeco)", flush=True)
        with mongoeco_server(work / "mongoeco") as uri:
            results["stores"]["mongoeco"] = scale_run("mongoeco", get_store(mongo_uri=uri, database="scale"),
                                                      templates, sizes, args.full_data, work / "mongoeco")
    results["dft_cost_avoided"] = dft_cost()
    results["estimate_100k"] = paper_estimate(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print_table(results)
    print(f"written {out}")
    return results


def estimate_only(files: list[Path], out: Path, argv=None) -> dict[str, Any]:
    """The 100,000-material estimate from recorded store_scale reports (their stores merged, the
    later file's store winning) and the largest screening runs in ``results/``."""
    stores: dict[str, Any] = {}
    for f in files:
        stores.update(json.loads(f.read_text())["stores"])
    est = paper_estimate({"stores": stores})
    est["inputs"]["store_scale"] = [f.name for f in files]
    result = {"benchmark": "estimate_100k", "command": "python benchmarks/store_scale.py "
              + " ".join(argv if argv is not None else sys.argv[1:]), "estimate_100k": est,
              "dft_cost_avoided": dft_cost()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(est, indent=1, default=str))
    print(f"written {out}")
    return result


def print_table(r: dict[str, Any]) -> None:
    for kind, rec in r["stores"].items():
        fp = rec["footprint"]
        if not fp.get("materials_measured"):
            print(f"\n{kind}: footprint {fp.get('note', 'not measured')}")
        else:
            print(f"\n{kind}: docs store {fp['docs_store_documents_per_material']:.2f} docs/material, "
                  f"{fp['docs_store_bytes_per_material'] / 1e3:.1f} kB/material; data store ({fp['data_store']}) "
                  f"{fp['data_store_documents_per_material']:.2f} docs/material, "
                  f"{fp['data_store_bytes_per_material'] / 1e3:.1f} kB/material")
        print(f"{'materials':>10} {'indexes':>8} " + " ".join(f"{q[:28]:>30}" for q in
                                                          next(iter(rec["sizes"].values()))["no_indexes"]))
        for n, s in rec["sizes"].items():
            for label in ("no_indexes", "with_indexes"):
                print(f"{n:>10} {'yes' if label == 'with_indexes' else 'no':>8} "
                      + " ".join(f"{v['median_s'] * 1e3:>28.1f}ms" for v in s[label].values()))
    for label, d in r["dft_cost_avoided"].items():
        print(f"\nDFT cost, {label}: {d['materials']} materials, FD {d['fd_supercells_total']} supercells vs recipe "
              f"{d['recipe_supercells_total']} (x{d['ratio_fd_over_recipe']:.2f})")


if __name__ == "__main__":
    main()
