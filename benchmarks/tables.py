#!/usr/bin/env python
"""Markdown tables of the scale benchmarks from their JSON files in ``benchmarks/results/``
(``python benchmarks/tables.py``; paste into benchmarks/README.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def screening_table(files: list[Path]) -> str:
    rows = ["| run | materials | supercell atoms (mean, range) | jobs (Fireworks) / material | build s | submit s | "
            "run s | materials/min | share in force calls | peak RSS MB | PhononDocs (failed) | status | docs store "
            "docs, kB / material | data store docs, kB / material | 1,000 extrapolated |",
            "|" + "---|" * 15]
    for f in files:
        r = json.loads(f.read_text())
        res = r["result"]
        st = res["store"]
        bt = res.get("batch_timings_s", {})
        fw = res.get("fireworks_per_material")
        jobs = f"{res.get('jobs_per_material', (res.get('jobs') or 0) / r['n_materials']):.3f}"
        if fw is not None:
            jobs += f" ({fw:.3f})"
        peak = res.get("peak_rss") or res.get("peak_rss_mb") or {}
        peak_txt = ", ".join(f"{k.replace('_mb', '')} {v:.0f}" for k, v in peak.items())
        ext = res.get("extrapolation", {}).get("estimated_hours_all_1000")
        sc = r["supercell_atoms"]
        rows.append(
            f"| {r['mode']} ({f.name}) | {r['n_materials']} | {sc['mean']:.0f} ({sc['min']}-{sc['max']}) | {jobs} | "
            f"{_f(res.get('build_flow_s'))} | {_f(res.get('submit_s'))} | "
            f"{_f(res.get('run_s') or res.get('rerun', {}).get('seconds'), '{:.0f}')} | "
            f"{_f(r['materials_per_minute_end_to_end'])} | {_f(bt.get('forces_share_of_batch_jobs'), '{:.3f}')} | "
            f"{peak_txt} | {res.get('phonon_docs')} ({res.get('failed_docs', '-')}) | {res.get('status_counts')} | "
            f"{st.get('docs_documents_per_material', 0):.2f}, {st.get('docs_bytes_per_material', 0) / 1e3:.1f} | "
            f"{st.get('data_documents_per_material', 0):.2f}, {st.get('data_bytes_per_material', 0) / 1e3:.0f} | "
            f"{_f(ext, '{:.1f}')} h |")
    return "\n".join(rows)


def store_table(f: Path) -> str:
    r = json.loads(f.read_text())
    out = []
    for kind, rec in r["stores"].items():
        fp = rec["footprint"]
        if not fp.get("materials_measured"):
            out.append(f"\n**{kind}** ({fp['docs_store']} + {fp['data_store']}): footprint "
                       f"{fp.get('note', 'not measured')}\n")
        else:
            out.append(f"\n**{kind}** ({fp['docs_store']} + {fp['data_store']}): per material "
                       f"{fp['docs_store_documents_per_material']:.2f} document(s), "
                       f"{fp['docs_store_bytes_per_material'] / 1e3:.1f} kB in the docs store; "
                       f"{fp['data_store_documents_per_material']:.2f} object(s), "
                       f"{fp['data_store_bytes_per_material'] / 1e3:.0f} kB in the data store"
                       + (f" ({fp['gridfs_chunks_per_material']:.1f} GridFS chunks)"
                          if fp.get("gridfs_chunks_per_material") else "") + "\n")
        queries = list(next(iter(rec["sizes"].values()))["no_indexes"])
        out.append("| materials | write | indexes | " + " | ".join(queries) + " |")
        out.append("|" + "---|" * (3 + len(queries)))
        for n, s in rec["sizes"].items():
            for label in ("no_indexes", "with_indexes"):
                write = f"{s['write_s']:.0f} s ({s['written_by']})" if label == "no_indexes" else \
                    f"ensure_indexes {s['ensure_indexes_s']:.1f} s ({s['indexes_created']}/{s['indexes_asked']})"
                out.append(f"| {n} | {write} | {'yes' if label == 'with_indexes' else 'no'} | "
                           + " | ".join(f"{s[label][q]['median_s'] * 1e3:.0f} ms ({s[label][q]['rows']})"
                                        for q in queries) + " |")
    return "\n".join(out)


def main() -> None:
    which = sys.argv[1:] or ["screen", "store"]
    if "screen" in which:
        files = sorted(RESULTS.glob("screen_*.json"))
        if files:
            print(screening_table(files))
    if "store" in which:
        for f in sorted(RESULTS.glob("store_scale*.json")):
            print(f"\n{f.name}:")
            print(store_table(f))


if __name__ == "__main__":
    main()
