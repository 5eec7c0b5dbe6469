#!/usr/bin/env python
"""The GPU measurement, prepared as one script that fits a few minutes (run it on a machine with
a CUDA GPU; nothing here has been run on one by this project yet, so no GPU number is claimed).

What it prints and writes (``--out``, default ``bench_output/gpu_bench.json``):

1. **Phonon throughput on the GPU** with the recipe's model (64x0e + 64x1o, 2 interactions,
   correlation 3, r_max 6 Å; seeded, untrained: the cost is the recipe model's, the phonons
   mean nothing), float64 and float32: ``phonon_throughput.py`` on its 13 crystals
   (108-162-atom supercells) with methods a (serial ASE calculator, one supercell at a time),
   c/c32 (PhononMaker, batched forces), s/s32 (the default screening path with documents) ->
   materials per minute, batched vs serial, the target s/a >= 20 on the same GPU.
2. **Training seconds per epoch per 1,000 atoms**: mace's own training (``mace_run_train`` through
   ``MaceTrainingMaker``) with the recipe's hyperparameters (``paper`` preset, batch 4, float64)
   for ``--epochs`` epochs on EMT-labelled perturbed fcc supercells (108 atoms), on the GPU.
3. **cuEquivariance**: whether ``cuequivariance_torch`` imports (its wheels must be installed);
   when it does, the forces of one 128-atom supercell with and without it, timed.

Run: ``python benchmarks/gpu_bench.py`` (``--quick`` for 3 crystals and 1 epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RECIPE_IRREPS = "64x0e + 64x1o"
RECIPE_R_MAX = 6.0


def recipe_model(path: Path) -> Path:
    import torch
    from make_model import ELEMENTS, build_model

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(build_model(elements=ELEMENTS, r_max=RECIPE_R_MAX, hidden_irreps=RECIPE_IRREPS), path)
    return path


def throughput(model: Path, quick: bool, out_dir: Path) -> dict[str, Any]:
    import phonon_throughput

    argv = ["--device", "cuda", "--model", str(model), "--methods", "a,c,c32,s,s32", "--no-progress",
            "--out", str(out_dir / "phonon_throughput_gpu.json")]
    if quick:
        argv.append("--quick")
    rep = phonon_throughput.main(argv)
    return {"ratios": rep["ratios"], "targets": rep["targets"],
            "materials_per_minute": {k: v["materials_per_minute"] for k, v in rep["methods"].items()},
            "forces_share": {k: v.get("forces_share") for k, v in rep["methods"].items()},
            "peak_gpu_mb": {k: v.get("peak_gpu_mb") for k, v in rep["methods"].items()},
            "supercell_atoms": sorted({m.get("natom_supercell") for m in rep["materials"].values()}),
            "s_over_a_target_20": rep["ratios"].get("s/a", 0) >= 20}


def training(epochs: int, work: Path) -> dict[str, Any]:
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from jobflow import run_locally

    from phonon_flows.makers.training import MaceTrainingMaker
    from phonon_flows.schemas.training import MaceHyperparameters
    from phonon_flows.store import get_store

    rng = np.random.default_rng(0)
    atoms_list = []
    for el, a in (("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52), ("Ag", 4.09)):
        for _ in range(10):
            at = bulk(el, "fcc", a=a, cubic=True) * (3, 3, 3)
            at.positions += rng.uniform(-0.05, 0.05, at.positions.shape)
            at.calc = EMT()
            e, f = at.get_potential_energy(), at.get_forces()
            at.calc = None
            at.info["REF_energy"] = e
            at.arrays["REF_forces"] = f
            atoms_list.append(at)
    import io

    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, atoms_list, format="extxyz")
    import hashlib

    xyz = buf.getvalue()
    ts = {"xyz": xyz, "xyz_sha256": hashlib.sha256(xyz.encode()).hexdigest(), "energy_key": "REF_energy",
          "forces_key": "REF_forces", "stress_key": "REF_stress", "n_structures": len(atoms_list),
          "material_ids": ["Cu", "Al", "Ni", "Ag"]}
    hp = MaceHyperparameters.preset("paper", max_num_epochs=epochs, start_swa=max(1, epochs - 1))
    maker = MaceTrainingMaker(hyperparameters=hp, device="cuda")
    job = maker.make(ts)
    t0 = time.perf_counter()
    resp = run_locally(job, store=get_store(store_dir=work / "store"), create_folders=True, root_dir=work / "jobs",
                       log=False, ensure_success=True)
    seconds = time.perf_counter() - t0
    doc = resp[job.uuid][1].output
    n_atoms = sum(len(a) for a in atoms_list)
    return {"epochs": epochs, "structures": len(atoms_list), "atoms": n_atoms, "seconds_total": seconds,
            "seconds_per_epoch_per_1000_atoms": seconds / epochs / (n_atoms / 1000),
            "note": "total wall time of the training job (data loading, E0s, both stages) / epochs / (atoms/1000)",
            "failed": bool(getattr(doc, "failed", False))}


def cueq(model: Path) -> dict[str, Any]:
    try:
        import cuequivariance_torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    from ase.build import bulk
    from mace.calculators import MACECalculator

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 8)
    out = {"available": True}
    for label, kw in (("e3nn", {}), ("cueq", {"enable_cueq": True})):
        calc = MACECalculator(model_paths=str(model), device="cuda", default_dtype="float32", **kw)
        atoms.calc = calc
        atoms.get_forces()
        t0 = time.perf_counter()
        for _ in range(10):
            atoms.rattle(0.001)
            atoms.get_forces()
        out[f"{label}_s_per_call_128_atoms"] = (time.perf_counter() - t0) / 10
    return out


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "bench_output" / "gpu_bench.json"))
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this script measures the GPU path only")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    model = recipe_model(out.parent / "recipe_mace_gpu.model")
    for name, fn in (("throughput", lambda: throughput(model, args.quick, out.parent)),
                     ("training", lambda: training(1 if args.quick else args.epochs, work)),
                     ("cuequivariance", lambda: cueq(model))):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one part failing still reports the others
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        report[name + "_wall_s"] = time.perf_counter() - t0
        print(name, json.dumps(report[name], default=str)[:2000], flush=True)
        out.write_text(json.dumps(report, indent=2, default=str))
    print(f"written {out}")
    return report


if __name__ == "__main__":
    main()
