#!/usr/bin/env python
"""phonon_flows' vectorised phonopy symmetry setup against phonopy's own, on many real crystals.

For each phonondb entry (a ``.tar.lzma`` of a folder, e.g. ``../shared/data/phonondb/sample-1000``),
builds the Phonopy object, its displacements and its DFT force constants (phonopy's finite
differences and symmetrization, from the entry's FORCE_SETS) twice: with phonopy's own functions
and inside :func:`phonon_flows.core.phonopy_symmetry.fast_phonopy_symmetry`; checks that the
atomic permutations (supercell and primitive), point-group operations, displacements and force
constants are the same bit for bit, and counts the operations that went to phonopy's own matcher.
Writes JSON to ``--out``.

Run: ``python benchmarks/phonopy_symmetry_check.py --folder ../shared/data/phonondb/sample-1000 --n 120``
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np


def build(entry, fast: bool):
    """(Phonopy with DFT force constants, displacements) of a phonondb entry, phonopy's API only."""
    from contextlib import nullcontext

    from phonon_flows.core.phonondb import phonopy_reference
    from phonon_flows.core.phonopy_symmetry import fast_phonopy_symmetry

    with fast_phonopy_symmetry() if fast else nullcontext():
        return phonopy_reference(entry)


def main(argv=None) -> dict:
    from tqdm import tqdm

    from phonon_flows.core import phonondb as pdb
    from phonon_flows.core import phonopy_symmetry as fast

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", required=True, help="folder of phonondb entries (.tar.lzma)")
    p.add_argument("--n", type=int, default=100, help="entries, drawn at random (seeded)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--out", default="bench_output/phonopy_symmetry_check.json")
    args = p.parse_args(argv)
    files = sorted(Path(args.folder).glob("*.tar.lzma"))
    if not files:
        sys.exit(f"no phonondb entries (*.tar.lzma) in {args.folder}")
    random.Random(args.seed).shuffle(files)
    rows, t_phonopy, t_fast = [], 0.0, 0.0
    for f in tqdm(files[: args.n], desc="entries"):
        try:
            entry = pdb.read_phonondb_entry(f)
        except Exception as exc:  # noqa: BLE001 - a bad entry is reported, not fatal
            rows.append({"entry": f.name, "error": str(exc)})
            continue
        before = dict(fast.counters)
        t0 = time.process_time()
        ref, ref_disps = build(entry, fast=False)
        t1 = time.process_time()
        ours, disps = build(entry, fast=True)
        t2 = time.process_time()
        t_phonopy += t1 - t0
        t_fast += t2 - t1
        same = {
            "permutations": bool(np.array_equal(ref.symmetry.atomic_permutations, ours.symmetry.atomic_permutations)),
            "primitive_permutations": bool(np.array_equal(ref.primitive.atomic_permutations,
                                                          ours.primitive.atomic_permutations)),
            "pointgroup": bool(np.array_equal(ref.symmetry.pointgroup_operations, ours.symmetry.pointgroup_operations)),
            "displacements": ref_disps == disps,
            "force_constants": bool(np.array_equal(ref.force_constants, ours.force_constants)),
        }
        rows.append({"entry": f.name, "natom_supercell": len(ref.supercell),
                     "operations": len(ref.symmetry.symmetry_operations["rotations"]), "same": same,
                     "fallback_operations": fast.counters["fallback_operations"] - before["fallback_operations"],
                     "fallback_cells": fast.counters["fallback_cells"] - before["fallback_cells"],
                     "cpu_s_phonopy": t1 - t0, "cpu_s_fast": t2 - t1})
    checked = [r for r in rows if "same" in r]
    report = {
        "benchmark": "phonopy_symmetry_check",
        "command": "python benchmarks/phonopy_symmetry_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_entries": len(checked), "n_errors": len(rows) - len(checked),
        "n_identical": sum(all(r["same"].values()) for r in checked),
        "operations": sum(r["operations"] for r in checked),
        "fallback_operations": sum(r["fallback_operations"] for r in checked),
        "fallback_cells": sum(r["fallback_cells"] for r in checked),
        "cpu_s_phonopy": t_phonopy, "cpu_s_fast": t_fast,
        "note": "cpu_s: process CPU seconds of build + displacements + force constants (FORCE_SETS) per way",
        "entries": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['n_identical']} of {report['n_entries']} entries identical bit for bit "
          f"({report['operations']} operations, {report['fallback_operations']} left to phonopy's matcher, "
          f"{report['fallback_cells']} cells to phonopy's function); CPU s phonopy {t_phonopy:.1f}, "
          f"vectorised {t_fast:.1f}; {report['n_errors']} unreadable entries; written to {out}")
    return report


if __name__ == "__main__":
    main()
