#!/usr/bin/env python
"""The GPU measurement as one script that fits a few minutes on a machine with a CUDA GPU (run on
one NVIDIA H200: figures in ``benchmarks/README.md``, "On a GPU", and ``results/gpu_h200.*``).

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
3. **Force calls alone**: seconds per 128-atom supercell of the recipe model, one supercell per
   call (ASE ``MACECalculator``, and ``MaceEngine`` with batch 1) against ``MaceEngine``'s
   batches (``batch_size="auto"``), float64 and float32.
4. **cuEquivariance**: whether ``cuequivariance_torch`` imports (its wheels must be installed);
   when it does, the forces of one 128-atom supercell with and without it, timed.

Each part is timed and written to the JSON as soon as it ends; one part failing still reports
the others. Run: ``python benchmarks/gpu_bench.py`` (``--quick`` for 3 crystals, 1 epoch and a
smaller training set).
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


def throughput(model: Path, quick: bool, out_dir: Path, methods: str, materials: str | None) -> dict[str, Any]:
    import phonon_throughput

    argv = ["--device", "cuda", "--model", str(model), "--methods", methods, "--no-progress",
            "--out", str(out_dir / "phonon_throughput_gpu.json")]
    if quick:
        argv.append("--quick")
    if materials:
        argv += ["--materials", materials]
    rep = phonon_throughput.main(argv)
    return {"ratios": rep["ratios"], "targets": rep["targets"],
            "wall_s": {k: v.get("wall_s") for k, v in rep["methods"].items()},
            "materials_per_minute": {k: v["materials_per_minute"] for k, v in rep["methods"].items()},
            "forces_share": {k: v.get("forces_share") for k, v in rep["methods"].items()},
            "peak_gpu_mb": {k: v.get("peak_gpu_mb") for k, v in rep["methods"].items()},
            "supercell_atoms": sorted({m.get("natom_supercell") for m in rep["materials"].values()}),
            "s_over_a_target_20": rep["ratios"].get("s/a", 0) >= 20}


def training(epochs: int, work: Path, per_element: int) -> dict[str, Any]:
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
        for _ in range(per_element):
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
                       log=True, ensure_success=False)
    seconds = time.perf_counter() - t0
    if job.uuid not in resp:
        logs = sorted((work / "jobs").rglob("*.log")) + sorted((work / "jobs").rglob("*_train.txt"))
        tails = {str(p.relative_to(work)): p.read_text(errors="replace")[-2500:] for p in logs[-4:]}
        raise RuntimeError(f"training job did not finish; logs: {json.dumps(tails)[-6000:]}")
    doc = resp[job.uuid][1].output
    n_atoms = sum(len(a) for a in atoms_list)
    n_train = int(getattr(doc, "n_train", 0) or 0)
    train_atoms = n_train * len(atoms_list[0])
    per_epoch = getattr(doc, "seconds_per_epoch", None)
    epoch_times = [row.time for row in getattr(doc, "learning_curve", []) if getattr(row, "time", None)]
    return {"epochs": epochs, "structures": len(atoms_list), "atoms": n_atoms, "n_train": n_train,
            "n_valid": int(getattr(doc, "n_valid", 0) or 0), "train_atoms": train_atoms,
            "hyperparameters": "paper preset (64x0e + 64x1o, 2 interactions, correlation 3, r_max 6 A, batch 4, float64)",
            "seconds_total": seconds,
            "seconds_per_epoch": per_epoch,
            "seconds_per_epoch_per_1000_train_atoms": (per_epoch / (train_atoms / 1000)) if per_epoch and train_atoms else None,
            "optimizer_seconds_per_epoch": epoch_times,
            "seconds_total_per_epoch_per_1000_atoms": seconds / epochs / (n_atoms / 1000),
            "note": "seconds_per_epoch: mace's log timestamps (training + validation of one epoch, mean); "
                    "seconds_total_*: whole job (process start, data loading, E0s, evaluation) / epochs / (all atoms/1000)",
            "failed": bool(getattr(doc, "failed", False)), "error": getattr(doc, "error", None),
            "log_tail": (getattr(doc, "log_tail", None) or "")[-1500:] if getattr(doc, "failed", False) else None}


def force_calls(model: Path, n: int = 32) -> dict[str, Any]:
    """Seconds per 128-atom supercell: one per call (ASE calculator, engine batch 1) vs batched."""
    import numpy as np
    import torch
    from ase.build import bulk
    from mace.calculators import MACECalculator

    from phonon_flows.engines.mace import MaceEngine

    rng = np.random.default_rng(0)
    base = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 8)
    cells = []
    for _ in range(n):
        at = base.copy()
        at.positions += rng.normal(0, 0.01, at.positions.shape)
        cells.append(at)
    out: dict[str, Any] = {"natoms": len(base), "supercells": n}
    for dtype in ("float64", "float32"):
        calc = MACECalculator(model_paths=str(model), device="cuda", default_dtype=dtype)
        for at in cells[:2]:
            calc.calculate(at.copy(), properties=["energy", "forces"])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for at in cells:
            calc.calculate(at.copy(), properties=["energy", "forces"])
        torch.cuda.synchronize()
        out[f"ase_calculator_{dtype}_s_per_supercell"] = (time.perf_counter() - t0) / n
        ref = None
        for bs in (1, "auto"):
            eng = MaceEngine(model, device="cuda", default_dtype=dtype, batch_size=bs)
            eng.compute(cells[:2])
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            res = eng.compute(cells)
            torch.cuda.synchronize()
            out[f"engine_batch_{bs}_{dtype}_s_per_supercell"] = (time.perf_counter() - t0) / n
            f = np.array([r.forces for r in res])
            if ref is None:
                ref = f
            else:
                out[f"engine_{dtype}_max_abs_force_diff_batched_vs_1"] = float(np.abs(f - ref).max())
        out[f"batched_over_serial_{dtype}"] = (out[f"ase_calculator_{dtype}_s_per_supercell"]
                                                / out[f"engine_batch_auto_{dtype}_s_per_supercell"])
        print(f"  force calls {dtype}: " + ", ".join(f"{k}={v:.4g}" for k, v in out.items()
                                                        if dtype in k and isinstance(v, float)), flush=True)
    return out


def cueq(model: Path) -> dict[str, Any]:
    try:
        import cuequivariance_torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    from ase.build import bulk
    from mace.calculators import MACECalculator

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 8)
    out = {"available": True}
    try:
        import cuequivariance_ops_torch  # noqa: F401

        out["ops_kernels"] = True
    except Exception as exc:  # noqa: BLE001
        out["ops_kernels"] = f"not importable ({type(exc).__name__}): cuequivariance_torch's PyTorch fallback"
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


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("mace-torch", "e3nn", "phonopy", "ase", "numpy", "pymatgen-core", "jobflow", "cuequivariance-torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--methods", default="a,c,c32,d,d32,s,s32", help="phonon_throughput methods")
    p.add_argument("--materials", default=None, help="phonon_throughput materials (default: all, or --quick's)")
    p.add_argument("--train-per-element", type=int, default=25, help="training structures per element (4 elements)")
    p.add_argument("--parts", default="throughput,force_calls,training,cuequivariance")
    p.add_argument("--out", default=str(REPO / "bench_output" / "gpu_bench.json"))
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this script measures the GPU path only")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                              "cuda": torch.version.cuda, "argv": sys.argv[1:], "versions": _versions()}
    print(json.dumps(report), flush=True)
    model = recipe_model(out.parent / "recipe_mace_gpu.model")
    parts = {"throughput": lambda: throughput(model, args.quick, out.parent, args.methods, args.materials),
             "force_calls": lambda: force_calls(model),
             "training": lambda: training(1 if args.quick else args.epochs, work,
                                          5 if args.quick else args.train_per_element),
             "cuequivariance": lambda: cueq(model)}
    for name in [x for x in args.parts.split(",") if x]:
        fn = parts[name]
        print(f"== {name}", flush=True)
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
