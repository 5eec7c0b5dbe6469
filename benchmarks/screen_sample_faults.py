"""``screen_sample.py --mode faults``: the local screening with faults, and its rerun.

- 5 % of the inputs are bad in the ways the input checks know, cycling through: a file that is
  not a crystal, overlapping atoms, an element the model does not know;
- 2 % of the materials fail at run time with NaN forces (this process wraps the force engine:
  fault injection, not a feature of the package);
- the first run is killed (SIGKILL) as soon as its first PhononDocs are stored, as a node or a
  worker dies; then ``phonon-flows status`` and a rerun (the same campaign again: it resumes).

Checked and reported: 0 materials lost (every input is a stored PhononDoc or a named input
failure), 0 duplicated (one PhononDoc per material), every failure named in ``status``, the rerun
recomputes only what the killed run had not stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

BAD_KINDS = ("not a crystal", "overlapping atoms", "element the model does not know")
DONE_MARK = "materials of the pack done and stored"
PACK_START_MARK = "phonons: pack of "


def write_inputs(rows, root: Path, bad_share: float, seed: int = 14) -> tuple[dict[str, str], dict, dict[str, str]]:
    """POSCAR files of the materials (``{mid: path}``), their supercell matrices, and the bad ones
    (``{mid: kind}``)."""
    from pymatgen.core import Element
    from pymatgen.io.vasp import Poscar
    from screen_sample import read_inputs, sample_elements

    structures, smats = read_inputs(rows)
    folder = root / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mids = list(structures)
    n_bad = int(round(bad_share * len(mids)))
    bad_ids = [mids[i] for i in sorted(rng.choice(len(mids), size=n_bad, replace=False))]
    known = set(sample_elements())
    alien = next(el for el in ("Pu", "Am", "Np", "Pm", "Tc", "Po") if el not in known)
    paths, bad = {}, {}
    for mid, s in structures.items():
        path = folder / f"{mid}.vasp"
        if mid in bad_ids:
            kind = BAD_KINDS[len(bad) % len(BAD_KINDS)]
            bad[mid] = kind
            if kind == "not a crystal":
                path.write_text("this file was cut short by a failed copy\n")
            elif kind == "overlapping atoms":
                s2 = s.copy()
                s2.append(s[0].species, s[0].coords + np.array([0.05, 0, 0]), coords_are_cartesian=True,
                          validate_proximity=False)
                Poscar(s2).write_file(path)
            else:
                s2 = s.copy()
                s2.replace_species({s.composition.elements[0]: Element(alien)})
                Poscar(s2).write_file(path)
        else:
            Poscar(s).write_file(path)
        paths[mid] = str(path)
    return paths, smats, bad


def nan_materials(mids: list[str], bad: dict[str, str], share: float, seed: int = 15) -> list[str]:
    rng = np.random.default_rng(seed)
    good = [m for m in mids if m not in bad]
    k = max(1, int(round(share * len(mids))))
    return [good[i] for i in sorted(rng.choice(len(good), size=k, replace=False))]


# --------------------------------------------------------------------------------------------
# the child: one run of the campaign, with NaN forces injected for some materials
# --------------------------------------------------------------------------------------------
def child(config_path: str) -> int:
    import logging

    import torch

    cfg = json.loads(Path(config_path).read_text())
    torch.set_num_threads(int(cfg["threads"]))
    # the runner sends each job's printing to its folder: progress goes to a file of its own
    handler = logging.FileHandler(cfg["progress_log"])
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    progress = logging.getLogger("phonon_flows.makers.batched_phonons")
    progress.setLevel(logging.INFO)
    progress.addHandler(handler)

    from phonon_flows import engines
    from phonon_flows.engines.base import ForceResult
    from phonon_flows.runner import run_campaign
    from phonon_flows.store import get_store
    from screen_sample import screening_maker

    nan_formulas = {tuple(sorted(f.items())) for f in cfg["nan_compositions"]}
    real = engines.get_engine

    class NaNFor:
        """Wraps the engine: NaN forces for the supercells of the chosen materials."""

        def __init__(self, engine):
            self.engine = engine

        def compute(self, structures, *a, **k):
            out = self.engine.compute(structures, *a, **k)
            res = []
            for atoms, r in zip(structures, out, strict=True):
                counts = {}
                for el in atoms.get_chemical_symbols():
                    counts[el] = counts.get(el, 0) + 1
                g = np.gcd.reduce(list(counts.values()))
                key = tuple(sorted((el, c // g) for el, c in counts.items()))
                res.append(ForceResult(r.energy, np.full_like(r.forces, np.nan)) if key in nan_formulas else r)
            return res

        def __getattr__(self, name):
            return getattr(self.engine, name)

    engines.get_engine = lambda name, **kw: NaNFor(real(name, **kw))

    class Args:
        batch_size = cfg["batch_size"]
        dtype = cfg["dtype"]
        device = cfg.get("device", "cpu")
        workers = cfg.get("workers", 0)

    flow = screening_maker(cfg["name"], Path(cfg["model"]), Args).make(cfg["inputs"],
                                                                       supercell_matrices=cfg["smats"])
    store = get_store(store_dir=cfg["store"])
    summary = run_campaign(flow, store, progress=False, work_dir=cfg["work"])
    print(summary.render(), flush=True)
    print("RUNNER " + json.dumps(summary.counts), flush=True)
    return 0


def _reduced(comp) -> dict[str, int]:
    red = comp.reduced_composition
    return {str(el): int(round(v)) for el, v in red.items()}


def stored_docs(progress_text: str) -> int:
    """PhononDocs stored so far, from the packs' progress lines: each pack counts its stored
    materials from zero ("phonons: 8/32 materials of the pack done and stored"), so the count is
    the sum over the packs run so far of each pack's last count."""
    total = current = 0
    for line in progress_text.splitlines():
        if PACK_START_MARK in line:
            total, current = total + current, 0
        elif DONE_MARK in line:
            current = int(line.split("phonons: ")[1].split("/")[0])
    return total + current


def run_child(cfg_path: Path, log_path: Path, kill_after_docs: int | None) -> dict[str, Any]:
    progress_log = Path(json.loads(cfg_path.read_text())["progress_log"])
    cmd = ["nice", "-n", "10", sys.executable, str(Path(__file__).resolve()), "--child", str(cfg_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        killed = False
        while proc.poll() is None:
            time.sleep(2)
            if kill_after_docs is not None and not killed:
                text = progress_log.read_text(errors="replace") if progress_log.exists() else ""
                if stored_docs(text) >= kill_after_docs:
                    os.kill(proc.pid, signal.SIGKILL)  # a dying node: no cleanup, no record
                    killed = True
        proc.wait()
    return {"seconds": time.perf_counter() - t0, "returncode": proc.returncode, "killed": killed}


def run_faults(args, rows, model_path: Path, root: Path) -> dict[str, Any]:
    from screen_sample import batch_timings, store_footprint

    from phonon_flows.results import PhononResults
    from phonon_flows.runner import campaign_status
    from phonon_flows.schemas.batch import PHONON_BATCH_KIND
    from phonon_flows.store import get_store

    t0 = time.perf_counter()
    paths, smats, bad = write_inputs(rows, root, args.bad_share)
    from screen_sample import read_inputs

    structures, _ = read_inputs(rows)
    nan_ids = nan_materials(list(paths), bad, args.nan_share)
    t_inputs = time.perf_counter() - t0
    cfg = {"name": args.name, "model": str(model_path), "inputs": paths, "smats": smats, "threads": args.threads,
           "batch_size": args.batch_size, "dtype": args.dtype, "device": args.device, "workers": args.workers,
           "store": str(root / "store"),
           "work": str(root / "runs"), "progress_log": str(root / "progress.log"),
           "nan_compositions": [_reduced(structures[m].composition) for m in nan_ids]}
    cfg_path = root / "faults.json"
    cfg_path.write_text(json.dumps(cfg))
    # materials sharing a NaN material's reduced formula fail too (the injection goes by composition)
    nan_keys = {tuple(sorted(c.items())) for c in cfg["nan_compositions"]}
    nan_all = [m for m in paths if m not in bad and tuple(sorted(_reduced(structures[m].composition).items())) in nan_keys]
    print(f"{len(bad)} bad inputs {sorted(bad)}; NaN forces for {nan_all}; first run killed after "
          f"{args.kill_after_docs} stored PhononDocs", flush=True)

    first = run_child(cfg_path, root / "run1.log", args.kill_after_docs)
    store = get_store(store_dir=cfg["store"])
    store.connect()
    stored_after_kill = store.docs_store.count({"output.@class": "PhononDoc", "metadata.phonon_flows.campaign": args.name})
    status_after_kill = campaign_status(store, args.name)[0]
    store.close()
    cli_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    st1 = subprocess.run([sys.executable, "-m", "phonon_flows.cli", "status", args.name, "--store-dir", cfg["store"]],
                         capture_output=True, text=True, env=cli_env)
    print(f"first run killed: {first}; {stored_after_kill} PhononDocs were stored", flush=True)

    second = run_child(cfg_path, root / "run2.log", None)
    st2 = subprocess.run([sys.executable, "-m", "phonon_flows.cli", "status", args.name, "--store-dir", cfg["store"]],
                         capture_output=True, text=True, env=cli_env)
    store = get_store(store_dir=cfg["store"])
    store.connect()
    status = campaign_status(store, args.name)[0]
    res = PhononResults(store)
    docs = res.find(campaign=args.name, failed=None)
    per_material: dict[str, int] = {}
    for d in docs:
        per_material[d["material_id"]] = per_material.get(d["material_id"], 0) + 1
    input_failures = {e["material_id"]: e["reason"] for e in status.input_failures}
    failures = {f["material_id"]: f["reason"] for f in status.failures if f.get("stage") == "phonon-mlip"}
    lost = [m for m in paths if m not in per_material and m not in input_failures]
    duplicated = [m for m, c in per_material.items() if c > 1]
    batches = [d["output"] for d in store.docs_store.query({"output.kind": PHONON_BATCH_KIND}, properties=["output"])]
    result = {
        "inputs": len(paths), "bad_inputs": bad, "input_failures_named": input_failures,
        "bad_inputs_all_named": sorted(input_failures) == sorted(bad),
        "nan_materials": nan_all, "runtime_failures_named": failures,
        "nan_materials_all_named": sorted(failures) == sorted(nan_all)
        and all("NaN" in failures[m] for m in nan_all),
        "killed_run": {**first, "phonon_docs_stored_before_kill": stored_after_kill,
                       "status_counts_after_kill": status_after_kill.counts,
                       "status_cli_after_kill": st1.stdout[-3000:]},
        "rerun": {**second, "status_cli": st2.stdout[-4000:], "status_cli_exit_code": st2.returncode,
                  "materials_reused_in_packs": sum(b.get("n_reused", 0) for b in batches),
                  "materials_computed_in_packs": sum(b.get("n_computed", 0) for b in batches)},
        "phonon_docs": len(docs), "lost": lost, "duplicated": duplicated,
        "status_counts": status.counts, "status_by_stage": status.by_stage,
        "store": store_footprint(store, len(paths)), "batch_timings_s": batch_timings(store),
        "inputs_s": t_inputs,
    }
    store.close()
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        raise SystemExit(child(sys.argv[2]))
    raise SystemExit("run it through screen_sample.py --mode faults")
