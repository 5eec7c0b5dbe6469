#!/usr/bin/env python
"""The DFT demo (``phonon-flows demo``) with other MACE settings: what a bigger model, another
cutoff or more epochs does to its accuracy against DFT, and what it costs in wall time.

Each run is the demo's whole campaign (the shipped phonondb materials, harmonic DFT labels, MACE
training, phonons of every material with MACE and with harmonic DFT) in its own store, with the
MACE settings given; its group table (frequency MAE, stability, A_vib, per material) is appended
as one record to ``--out`` (JSON list), so runs made at different times collect in one file.

Run ``python benchmarks/dft_demo_settings.py --label c16 --hidden-irreps "16x0e + 16x1o"
--correlation 3 --epochs 40``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """MACE overrides of the demo's settings, from the command line (only those given)."""
    from phonon_flows.schemas.training import PRESETS

    hp: dict[str, Any] = {key: getattr(args, key, None) for key in ("hidden_irreps", "correlation", "r_max", "lr", "seed", "committee")
                          if getattr(args, key, None) is not None}
    extra = dict(PRESETS["small"]["extra"])
    if args.hidden_irreps:  # the readout MLP follows the channels unless given
        channels = args.hidden_irreps.split("x")[0].strip()
        extra["MLP_irreps"] = args.mlp_irreps or f"{channels}x0e"
    elif args.mlp_irreps:
        extra["MLP_irreps"] = args.mlp_irreps
    if args.radial_mlp:
        extra["radial_MLP"] = args.radial_mlp
    if extra != PRESETS["small"]["extra"]:
        hp["extra"] = extra
    return hp


def record(label: str, hp: dict[str, Any], args: argparse.Namespace, result: Any, wall: float) -> dict[str, Any]:
    groups = {}
    for name, g in result.groups.items():
        groups[name] = {"materials": len(g.material_ids), "freq_mae_THz": g.freq_mae_THz,
                        "stability_right": g.stability_right, "a_vib_300_mae_meV": g.a_vib_300_mae_meV,
                        "per_material_freq_mae_THz": g.per_material_freq_mae_THz,
                        "material_ids": g.material_ids}
    return {"label": label, "hyperparameters": hp, "dft_training": args.dft_training, "epochs": args.epochs,
            "training_threads": args.threads,
            "wall_s": wall, "loadavg_at_end": list(os.getloadavg()), "groups": groups,
            "command": "python benchmarks/dft_demo_settings.py " + shlex.join(args.argv)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", required=True, help="name of this run in the results file")
    p.add_argument("--hidden-irreps", default=None, help="e.g. '16x0e + 16x1o' (default: the demo's 8x0e + 8x1o)")
    p.add_argument("--correlation", type=int, default=None, help="correlation order (demo: 2)")
    p.add_argument("--r-max", type=float, default=None, help="cutoff, Å (demo: 6.0)")
    p.add_argument("--lr", type=float, default=None, help="learning rate of stage one (demo: 0.01)")
    p.add_argument("--mlp-irreps", default=None, help="readout MLP irreps (default: as many scalars as channels)")
    p.add_argument("--radial-mlp", default=None, help="e.g. '[32, 32]' (demo: [16, 16])")
    p.add_argument("--epochs", type=int, default=None, help="epochs (demo: 40)")
    p.add_argument("--seed", type=int, default=None, help="MACE seed: weights and train/validation split (demo: 123)")
    p.add_argument("--committee", type=int, default=None, help="MACE models trained side by side as one committee (demo: 2)")
    p.add_argument("--threads", type=int, default=None, help="training threads of each member (demo: 1)")
    p.add_argument("--dft-training", default="perturbed", choices=["perturbed", "finite-displacement", "both"],
                   help="training data: the recipe's perturbed supercells (the demo), phonondb's "
                        "finite-displacement supercells, or both")
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--out", default=str(HERE / "results" / "dft_demo_settings.json"))
    args = p.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]

    from phonon_flows import demo
    from phonon_flows.store import get_store

    args.epochs = args.epochs or demo.DFT_DEMO_EPOCHS
    args.threads = args.threads or demo.DFT_DEMO_TRAINING_THREADS
    hp = settings_from_args(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix=f"dft_demo_{args.label}_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"DFT demo, run {args.label!r}: MACE overrides {hp or 'none'}, {args.dft_training} training data, "
          f"{args.epochs} epochs, {args.threads} training thread(s), work folder {work}", flush=True)
    t0 = time.perf_counter()
    result = demo.run_dft_demo(get_store(store_dir=work / "store"), epochs=args.epochs, work_dir=work / "runs",
                               hyperparameters=hp, training_threads=args.threads,
                               dft_training=args.dft_training)
    rec = record(args.label, hp, args, result, time.perf_counter() - t0)
    print(demo.dft_demo_table(result))
    print(f"wall {rec['wall_s'] / 60:.1f} min")
    out = Path(args.out)
    runs = json.loads(out.read_text()) if out.is_file() else []
    runs = [r for r in runs if r["label"] != args.label] + [rec]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs, indent=1).replace(str(work), "WORK"))  # no path of this machine
    print(f"written {out}")
    return rec


if __name__ == "__main__":
    main()
