#!/usr/bin/env python
"""Phonon throughput with a trained-size MACE model: serial baseline vs atomate2 vs phonon_flows.

For one fixed small MACE model (``benchmarks/make_model.py``: seeded, untrained, 16 channels,
r_max 5 Å, float64) and a fixed set of prototype crystals (1-14 atoms per primitive cell, 108-162
atom supercells, built here without downloads), the same process times:

(a) ``serial``: the paper's ``calc_phonon.py`` way: phonopy displacements, one ASE
    ``MACECalculator`` call per displaced supercell (calculator made once per material, as a
    per-material script does), phonopy force constants, then the same outputs as (c): q-mesh
    (l = 75 Å), thermal properties at 300/1000 K, total DOS, band structure (101 points/segment);
(b) ``atomate2``: atomate2's force-field ``PhononMaker`` with the same model file
    (``ForceFieldStaticMaker(force_field_name="MACE", calculator_kwargs={"model": path})``), no
    relaxation / static run, same supercell matrix, displacement and symprec, ``run_locally`` on
    a ``MemoryStore`` JobStore;
(c) ``phonon_flows``: ``phonon_flows.makers.PhononMaker`` (engine "mace", batched forces), same
    settings, ``run_locally`` on a ``MemoryStore`` JobStore; also in float32 (``c32``) and with
    all materials in one job and one model load (``d``, :class:`BatchedPhononMaker`).

Checks: frequencies of (a), (b), (c), (d) on a common q-point set (from each method's force
constants) agree to 1e-4 THz; float32's cost is max |Δf| vs float64. Reports materials per
minute, the ratios c/a and c/b, peak memory, documents and bytes each material writes to the
store for (b) and (c), and (with ``--profile``) where the time goes. Writes JSON to ``--out``.

Run: ``python benchmarks/phonon_throughput.py`` (``make bench``); ``--quick`` for 3 materials.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

DISPLACEMENT = 0.01  # Å, phonopy's and atomate2's default, the recipe's
SYMPREC = 1e-5
TEMPERATURES = (300.0, 1000.0)
MESH_LENGTH = 75.0
CUTOFF_FREQUENCY = 0.1
BAND_NPOINTS = 101
AGREEMENT_TOL_THZ = 1e-4
FLOAT32_TOL_THZ = 0.01
TARGETS = {"c/a float64": 1.0, "c/a float32": 1.5, "c/b": 3.0, "s/a": 2.5, "s/b": 10.0, "s forces share": 0.9}

# --------------------------------------------------------------------------------------------
# the materials: prototypes with experimental-ish lattice constants, fixed supercell matrices
# --------------------------------------------------------------------------------------------
FCC_PRIM_4 = [[4, 0, 0], [0, 4, 0], [0, 0, 4]]  # 4x4x4 primitive fcc cells (2 atoms each: 128)
FCC_CONV_3 = [[-3, 3, 3], [3, -3, 3], [3, 3, -3]]  # 3x3x3 conventional cubes of fcc (1 atom: 108)
HEX_442 = [[4, 0, 0], [0, 4, 0], [0, 0, 2]]  # wurtzite (4 atoms: 128)
DIAG_333 = [[3, 0, 0], [0, 3, 0], [0, 0, 3]]


@dataclass(frozen=True)
class Material:
    name: str
    prototype: str
    supercell_matrix: list

    def structure(self):
        """A fresh copy of the material's input structure. The structures are built once, before
        any timing (:func:`warm_up`): building rutile and spinel from their space groups takes
        pymatgen 0.4 s each, input preparation that no method's own cost includes (a user's script
        reads a file)."""
        return _build(self.name, self.prototype).copy()


@functools.lru_cache(maxsize=None)
def _build(name: str, prototype: str):
    from ase.build import bulk
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    a = {"Si": 5.431, "Ge": 5.658, "NaCl": 5.640, "MgO": 4.212, "GaAs": 5.653, "ZnS": 5.409, "Cu": 3.615,
         "Al": 4.046}
    if prototype in ("diamond", "rocksalt", "zincblende", "fcc"):
        return AseAtomsAdaptor.get_structure(bulk(name, prototype, a=a[name]))
    if prototype == "wurtzite":
        a_, c_, u_ = {"GaN": (3.189, 5.185, 0.377), "ZnO": (3.250, 5.207, 0.382)}[name]
        return AseAtomsAdaptor.get_structure(bulk(name, "wurtzite", a=a_, c=c_, u=u_))
    if prototype == "rutile":
        return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                         [[0, 0, 0], [0.3048, 0.3048, 0]])
    if prototype == "spinel":  # Fd-3m origin choice 1: Mg 8a, Al 16d, O 32e; primitive cell of 14 atoms
        conv = Structure.from_spacegroup("Fd-3m", Lattice.cubic(8.083), ["Mg", "Al", "O"],
                                         [[0, 0, 0], [0.625, 0.625, 0.625], [0.3874, 0.3874, 0.3874]])
        return conv.get_primitive_structure()
    if prototype == "perovskite":
        return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                         [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    raise ValueError(f"unknown prototype {prototype}")


MATERIALS = [
    Material("Si", "diamond", FCC_PRIM_4),
    Material("Ge", "diamond", FCC_PRIM_4),
    Material("NaCl", "rocksalt", FCC_PRIM_4),
    Material("MgO", "rocksalt", FCC_PRIM_4),
    Material("GaAs", "zincblende", FCC_PRIM_4),
    Material("ZnS", "zincblende", FCC_PRIM_4),
    Material("GaN", "wurtzite", HEX_442),
    Material("ZnO", "wurtzite", HEX_442),
    Material("Cu", "fcc", FCC_CONV_3),
    Material("Al", "fcc", FCC_CONV_3),
    Material("TiO2", "rutile", DIAG_333),
    Material("SrTiO3", "perovskite", DIAG_333),
    Material("MgAl2O4", "spinel", [[2, 0, 0], [0, 2, 0], [0, 0, 2]]),
]
QUICK = ("Si", "NaCl", "Cu")

METHODS = ("a", "b", "c", "c32", "d", "d32", "s", "s32")
METHOD_LABELS = {
    "a": "serial ASE calculator + phonopy (paper's calc_phonon.py)",
    "b": "atomate2 forcefields PhononMaker (run_locally, MemoryStore)",
    "c": "phonon_flows PhononMaker, float64 (run_locally, MemoryStore)",
    "c32": "phonon_flows PhononMaker, float32",
    "d": "phonon_flows BatchedPhononMaker: all materials in one job, float64",
    "d32": "phonon_flows BatchedPhononMaker: all materials in one job, float32",
    "s": "phonon_flows default screening path: ScreeningMaker (batched, no relax, no DOS) + run_campaign, "
         "one PhononDoc per material written to the embedded store, float64",
    "s32": "the default screening path (as s) with the model in float32",
}


# --------------------------------------------------------------------------------------------
# measurement utilities
# --------------------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.start_mb = self.peak_mb = 0.0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.start_mb = self.peak_mb = self._proc.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)


def memory_store_jobstore():
    """A jobflow JobStore on MemoryStores, shaped like phonon_flows.store.get_store (``data`` store)."""
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    store.connect()
    return store


def store_cost(store) -> dict[str, int]:
    """Documents and BSON bytes in the docs store and the data store."""
    import bson

    out = {}
    for label, s in (("docs", store.docs_store), ("data", store.additional_stores["data"])):
        docs = list(s.query())
        out[f"{label}_documents"] = len(docs)
        out[f"{label}_bytes"] = int(sum(len(bson.encode(d)) for d in docs))
    out["documents"] = out["docs_documents"] + out["data_documents"]
    out["bytes"] = out["docs_bytes"] + out["data_bytes"]
    return out


@contextlib.contextmanager
def in_dir(path: Path):
    old = Path.cwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def common_qpoints(n: int = 4) -> np.ndarray:
    """Γ-centred n x n x n grid plus a few zone-boundary points, reduced coordinates of the primitive cell."""
    grid = np.array([[i, j, k] for i in range(n) for j in range(n) for k in range(n)], dtype=float) / n
    extra = np.array([[0.5, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0.5], [0.5, 0.25, 0.75], [0.375, 0.375, 0.75]])
    return np.vstack([grid, extra])


def frequencies_from_fc(material: Material, fc: np.ndarray, qpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (THz) at ``qpoints`` from force constants (full or compact) of ``material``:
    as given, and after phonopy's translational + permutation symmetrization.

    The methods differ in what they do to the force constants after phonopy builds them (the
    serial script and atomate2 nothing, phonon_flows the symfc projector), which moves
    frequencies near Γ by up to ~4e-4 THz; comparing after one common symmetrization checks
    that the forces and the phonopy pipeline agree."""
    from phonopy import Phonopy
    from pymatgen.io.phonopy import get_phonopy_structure

    phonon = Phonopy(get_phonopy_structure(material.structure()), supercell_matrix=material.supercell_matrix,
                     primitive_matrix="auto", symprec=SYMPREC)
    phonon.force_constants = np.asarray(fc, dtype=float)
    phonon.run_qpoints(qpoints)
    raw = np.asarray(phonon.qpoints.frequencies)
    phonon.symmetrize_force_constants(show_drift=False)
    phonon.run_qpoints(qpoints)
    return raw, np.asarray(phonon.qpoints.frequencies)


def mesh_numbers(lattice: np.ndarray, length: float = MESH_LENGTH) -> list[int]:
    """N_i = max(1, nint(l |b_i|)) (b_i reciprocal vectors without 2π), the recipe's mesh."""
    rec = np.linalg.inv(np.asarray(lattice, dtype=float)).T
    return [max(1, int(np.floor(length * np.linalg.norm(b) + 0.5))) for b in rec]


# --------------------------------------------------------------------------------------------
# (a) the serial baseline
# --------------------------------------------------------------------------------------------
def run_serial(material: Material, model_path: Path, device: str, dtype: str = "float64") -> dict[str, Any]:
    """Paper-style script for one material. Returns timings, frequencies' force constants, etc."""
    from ase import Atoms
    from mace.calculators import MACECalculator
    from phonopy import Phonopy
    from pymatgen.io.phonopy import get_phonopy_structure

    t0 = time.perf_counter()
    calc = MACECalculator(model_paths=str(model_path), device=device, default_dtype=dtype)
    t_load = time.perf_counter()
    phonon = Phonopy(get_phonopy_structure(material.structure()), supercell_matrix=material.supercell_matrix,
                     primitive_matrix="auto", symprec=SYMPREC)
    phonon.generate_displacements(distance=DISPLACEMENT)
    forces = []
    for sc in phonon.supercells_with_displacements:
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        atoms.calc = calc
        forces.append(np.array(atoms.get_forces()))
    t_forces = time.perf_counter()
    phonon.forces = forces
    phonon.produce_force_constants()
    phonon.run_mesh(mesh_numbers(phonon.primitive.cell), is_gamma_center=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        phonon.run_thermal_properties(temperatures=list(TEMPERATURES), cutoff_frequency=CUTOFF_FREQUENCY)
        phonon.run_total_dos()
    phonon.auto_band_structure(npoints=BAND_NPOINTS)
    t_end = time.perf_counter()
    return {
        "seconds": t_end - t0,
        "load_s": t_load - t0,
        "forces_s": t_forces - t_load,
        "phonopy_s": t_end - t_forces,
        "n_displacements": len(forces),
        "natom_supercell": len(phonon.supercell),
        "natom_primitive": len(phonon.primitive),
        "force_constants": np.array(phonon.force_constants),
        "forces": forces,
    }


# --------------------------------------------------------------------------------------------
# (b) atomate2
# --------------------------------------------------------------------------------------------
def atomate2_flow(material: Material, model_path: Path, device: str, dtype: str = "float64"):
    from atomate2.forcefields.flows.phonons import PhononMaker as A2PhononMaker
    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    calc_kwargs = {"model": str(model_path), "device": device, "default_dtype": dtype}
    maker = A2PhononMaker(
        bulk_relax_maker=None,
        static_energy_maker=None,
        phonon_displacement_maker=ForceFieldStaticMaker(force_field_name="MACE", calculator_kwargs=calc_kwargs),
        displacement=DISPLACEMENT,
        symprec=SYMPREC,
        min_length=None,
    )
    return maker.make(material.structure(), supercell_matrix=material.supercell_matrix)


def run_atomate2(material: Material, model_path: Path, device: str, workdir: Path) -> dict[str, Any]:
    from jobflow import run_locally

    store = memory_store_jobstore()
    t0 = time.perf_counter()
    flow = atomate2_flow(material, model_path, device)
    with in_dir(workdir / f"atomate2_{material.name}"):
        responses = run_locally(flow, store=store, log=False, ensure_success=True)
    seconds = time.perf_counter() - t0
    doc = store.query_one({"name": "generate_frequencies_eigenvectors"}, load=True)
    fc = np.array(doc["output"]["force_constants"]["force_constants"])
    return {"seconds": seconds, "force_constants": fc, "store": store_cost(store), "n_jobs": len(responses)}


# --------------------------------------------------------------------------------------------
# (c) phonon_flows, (d) phonon_flows batched across materials
# --------------------------------------------------------------------------------------------
def engine_kwargs(model_path: Path, device: str, dtype: str) -> dict[str, Any]:
    return {"model_path": str(model_path), "device": device, "default_dtype": dtype, "batch_size": "auto"}


def pf_maker_kwargs() -> dict[str, Any]:
    return {"displacement": DISPLACEMENT, "symprec": SYMPREC, "temperatures": TEMPERATURES,
            "mesh_length": MESH_LENGTH, "cutoff_frequency": CUTOFF_FREQUENCY, "band_npoints": BAND_NPOINTS}


def run_phonon_flows(material: Material, model_path: Path, device: str, dtype: str, workdir: Path) -> dict[str, Any]:
    from jobflow import run_locally

    from phonon_flows.makers import PhononMaker

    store = memory_store_jobstore()
    t0 = time.perf_counter()
    maker = PhononMaker(engine="mace", engine_kwargs=engine_kwargs(model_path, device, dtype), **pf_maker_kwargs())
    job = maker.make(material.structure(), material_id=material.name, supercell_matrix=material.supercell_matrix)
    with in_dir(workdir / f"phonon_flows_{material.name}_{dtype}"):
        responses = run_locally(job, store=store, log=False, ensure_success=True)
    seconds = time.perf_counter() - t0
    doc = responses[job.uuid][1].output
    if doc.failed:
        raise RuntimeError(f"phonon_flows failed for {material.name}: {doc.errors}")
    return {"seconds": seconds, "force_constants": np.array(doc.force_constants.force_constants),
            "store": store_cost(store), "n_displacements": doc.n_displacements,
            "natom_supercell": doc.natom_supercell, "natom_primitive": doc.natom_primitive}


def run_phonon_flows_batched(materials: list[Material], model_path: Path, device: str, dtype: str,
                             workdir: Path, workers: int = 0) -> dict[str, Any]:
    from jobflow import run_locally

    from phonon_flows.makers.batched_phonons import BatchedPhononMaker

    store = memory_store_jobstore()
    t0 = time.perf_counter()
    maker = BatchedPhononMaker(engine="mace", engine_kwargs=engine_kwargs(model_path, device, dtype),
                               postprocess_workers=workers, **pf_maker_kwargs())
    job = maker.make([m.structure() for m in materials], material_ids=[m.name for m in materials],
                     supercell_matrices=[m.supercell_matrix for m in materials])
    with in_dir(workdir / f"phonon_flows_batched_{dtype}"):
        responses = run_locally(job, store=store, log=False, ensure_success=True)
    seconds = time.perf_counter() - t0
    docs = responses[job.uuid][1].output
    failed = [d.material_id for d in docs if d.failed]
    if failed:
        raise RuntimeError(f"phonon_flows batched run failed for {failed}: {[d.errors for d in docs if d.failed]}")
    return {"seconds": seconds, "store": store_cost(store),
            "force_constants": {d.material_id: np.array(d.force_constants.force_constants) for d in docs},
            "sizes": {d.material_id: {"natom_supercell": d.natom_supercell, "n_displacements": d.n_displacements,
                                      "natom_primitive": d.natom_primitive} for d in docs}}


def run_screening(materials: list[Material], model_path: Path, device: str, dtype: str,
                  workdir: Path, workers: int = 0) -> dict[str, Any]:
    """The path a user gets by default: ScreeningMaker (packs of materials in one job, one model
    load, no relax, no DOS) run by run_campaign on the embedded store; the documents are stored
    (one PhononDoc per material, large data in the data store) inside the timing."""
    from make_model import sha256

    from phonon_flows.flows import ScreeningMaker
    from phonon_flows.makers import PhononMaker
    from phonon_flows.results import PhononResults
    from phonon_flows.runner import run_campaign
    from phonon_flows.schemas.batch import PHONON_BATCH_KIND
    from phonon_flows.store import get_store

    root = workdir / f"screening_{dtype}_{time.monotonic_ns()}"
    store = get_store(store_dir=root / "store")
    t0 = time.perf_counter()
    maker = ScreeningMaker(
        name="bench", model=sha256(model_path), relax=False,
        phonon_maker=PhononMaker(**pf_maker_kwargs(), total_dos=False),
        engine_kwargs=engine_kwargs(model_path, device, dtype), postprocess_workers=workers,
    )
    flow = maker.make({m.name: m.structure() for m in materials},
                      supercell_matrices={m.name: m.supercell_matrix for m in materials})
    summary = run_campaign(flow, store, progress=False, work_dir=root / "runs")
    seconds = time.perf_counter() - t0
    if not summary.ok:
        raise RuntimeError(f"screening failed: {summary.render()}")
    store.connect()
    results = PhononResults(store)
    docs = results.find(campaign="bench")
    batches = [d["output"] for d in store.docs_store.query({"output.kind": PHONON_BATCH_KIND}, properties=["output"])]
    timings: dict[str, float] = {}
    for b in batches:
        for k, v in b["timings"].items():
            timings[k] = timings.get(k, 0.0) + v
    return {"seconds": seconds, "store": store_cost(store),
            "force_constants": {d["material_id"]: results.force_constants(d) for d in docs},
            "batch_timings_s": timings, "n_jobs": len(flow.jobs),
            "sizes": {d["material_id"]: {"natom_supercell": d["natom_supercell"],
                                         "n_displacements": d["n_displacements"],
                                         "natom_primitive": d["natom_primitive"]} for d in docs}}


def machine_load() -> dict[str, Any]:
    """Load averages and the machine's CPU times now (to tell how idle it was around a run)."""
    import psutil

    t = psutil.cpu_times()
    return {"loadavg_1_5_15": list(os.getloadavg()), "cpu_busy_s": float(sum(t) - t.idle - getattr(t, "iowait", 0.0)),
            "cpu_total_s": float(sum(t)), "process_cpu_s": float(sum(psutil.Process().cpu_times()[:4]))}


def idleness(before: dict[str, Any], after: dict[str, Any], cpus: int) -> dict[str, Any]:
    """How idle the machine was for this run: load averages before/after, and the CPU time other
    processes used meanwhile (machine busy CPU time minus this process's, with its children)."""
    busy = after["cpu_busy_s"] - before["cpu_busy_s"]
    total = after["cpu_total_s"] - before["cpu_total_s"]
    own = after["process_cpu_s"] - before["process_cpu_s"]
    others = max(0.0, busy - own)
    share = others / total if total > 0 else 0.0
    return {"loadavg_before": before["loadavg_1_5_15"], "loadavg_after": after["loadavg_1_5_15"], "cpus": cpus,
            "machine_busy_share": busy / total if total > 0 else None,
            "other_processes_cpu_share": share,
            "idle": bool(before["loadavg_1_5_15"][0] < 0.25 * cpus and share < 0.1),
            "note": "other_processes_cpu_share: CPU time of all other processes during the run / (cpus x wall); "
                    "idle = load1 before < cpus/4 and others < 10 %"}


# --------------------------------------------------------------------------------------------
# where the time goes: stage timers (always on, cheap) and an optional cProfile pass
# --------------------------------------------------------------------------------------------
def _stage_targets() -> list[tuple[str, Any, str]]:
    """(stage, owner object, attribute) of the functions timed as stages (the outermost one counts)."""
    import jobflow.core.job
    import jobflow.core.store
    import ruamel.yaml
    from mace.calculators import MACECalculator
    from phonopy import Phonopy
    from pymatgen.phonon import dos as pmg_dos
    from pymatgen.phonon import plotter

    import phonon_flows.core.phonons as pf_core
    import phonon_flows.makers.phonons as pf_makers
    from phonon_flows.engines.mace import MaceEngine

    targets = [
        ("model load", MACECalculator, "__init__"),
        ("model load", MaceEngine, "__init__"),
        ("forces (model + neighbour list)", MACECalculator, "calculate"),
        ("forces (model + neighbour list)", MaceEngine, "_compute"),
        ("phonopy setup + displacements", Phonopy, "__init__"),
        ("phonopy setup + displacements", Phonopy, "generate_displacements"),
        ("force constants", Phonopy, "produce_force_constants"),
        ("force-constant symmetrization", Phonopy, "symmetrize_force_constants"),
        ("mesh + thermal properties", Phonopy, "run_mesh"),
        ("mesh + thermal properties", Phonopy, "run_thermal_properties"),
        ("total DOS", Phonopy, "run_total_dos"),
        ("band structure", Phonopy, "auto_band_structure"),
        ("band structure", Phonopy, "run_band_structure"),
        ("band structure", pf_core, "seekpath_band_path"),
        ("band structure", pf_core, "_band_frequencies"),
        ("files + plots", Phonopy, "save"),
        ("files + plots", Phonopy, "write_yaml_band_structure"),
        ("files + plots", Phonopy, "write_total_dos"),
        ("files + plots", plotter.PhononBSPlotter, "save_plot"),
        ("files + plots", plotter.PhononDosPlotter, "save_plot"),
        ("files + plots", ruamel.yaml.YAML, "load"),
        ("thermodynamics from the DOS (pymatgen)", pmg_dos.PhononDos, "helmholtz_free_energy"),
        ("thermodynamics from the DOS (pymatgen)", pmg_dos.PhononDos, "entropy"),
        ("thermodynamics from the DOS (pymatgen)", pmg_dos.PhononDos, "internal_energy"),
        ("thermodynamics from the DOS (pymatgen)", pmg_dos.PhononDos, "cv"),
        ("jobflow references (resolve, serialize)", jobflow.core.job.Job, "resolve_args"),
        ("document (phonopy yaml, pydantic)", pf_core, "phonopy_yaml_text"),
        ("store write (serialize + insert)", jobflow.core.store.JobStore, "update"),
    ]
    try:  # atomate2 is needed by method b only (a machine without it can time the others)
        from atomate2.forcefields.schemas import ForceFieldTaskDocument
    except ImportError:
        pass
    else:
        targets.append(("force-field task documents (atomate2)", ForceFieldTaskDocument, "from_ase_compatible_result"))
    del pf_makers
    return targets


class StageTimer:
    """Wall time per stage of the timed runs, by wrapping library functions (outermost call counts).

    Stages not covered (jobflow bookkeeping, structure conversions, pydantic documents) end up
    in "other" = total - sum of stages.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._active = 0
        self._patched: list[tuple[Any, str, Any]] = []

    def _wrap(self, stage: str, fn):
        import functools

        timer = self

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if timer._active:
                return fn(*args, **kwargs)
            timer._active += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timer._active -= 1
                timer.seconds[stage] = timer.seconds.get(stage, 0.0) + time.perf_counter() - t0

        return wrapper

    def __enter__(self):
        for stage, owner, attr in _stage_targets():
            original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
            self._patched.append((owner, attr, original))
            if isinstance(original, classmethod):
                setattr(owner, attr, classmethod(self._wrap(stage, original.__func__)))
            else:
                setattr(owner, attr, self._wrap(stage, original))
        return self

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self._patched):
            setattr(owner, attr, original)
        self._patched.clear()


CATEGORIES = (
    ("neighbour list + graph", ("/mace/data/", "/matscipy/", "/mace/tools/torch_geometric")),
    ("model (torch/mace/e3nn)", ("/torch/", "/mace/", "/e3nn/", "/opt_einsum", "torch._C", "'torch.", "method torch.")),
    ("phonopy/spglib/seekpath/symfc", ("/phonopy/", "/spglib/", "/seekpath/", "/symfc/", "phonors", "_phonopy")),
    ("store + serialization", ("/jobflow/", "/maggma/", "/mongomock/", "/monty/", "/bson/", "/pydantic",
                               "/ruamel/", "/yaml/", "/json/", "/emmet/", "/orjson")),
    ("plots (matplotlib)", ("/matplotlib/", "/PIL/")),
    ("pymatgen/ase/atomate2/phonon_flows", ("/pymatgen/", "/ase/", "/atomate2/", "/phonon_flows/", "/benchmarks/")),
)


def classify(filename: str, funcname: str) -> str | None:
    """Category of a function by where it lives; None for numpy/builtins/stdlib (charged to callers)."""
    key = f"{filename}:{funcname}"
    for label, needles in CATEGORIES:
        if any(n in key for n in needles):
            return label
    return None


def profile_breakdown(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` under cProfile; self time per category, numpy/builtin time charged to the
    calling library (in proportion to the calls' cumulative time), and the top functions."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    stats = pstats.Stats(prof).stats
    memo: dict[Any, dict[str, float]] = {}

    def shares(func, depth=0) -> dict[str, float]:
        if func in memo:
            return memo[func]
        label = classify(func[0], func[2])
        if label is not None:
            memo[func] = {label: 1.0}
            return memo[func]
        memo[func] = {"other": 1.0}  # cycle guard
        callers = stats.get(func, (0, 0, 0, 0, {}))[4]
        weights = {c: v[3] for c, v in callers.items() if v[3] > 0}
        total = sum(weights.values())
        if depth > 30 or not total:
            return memo[func]
        out: dict[str, float] = {}
        for caller, w in weights.items():
            for lab, frac in shares(caller, depth + 1).items():
                out[lab] = out.get(lab, 0.0) + frac * w / total
        memo[func] = out
        return out

    cats: dict[str, float] = {}
    rows = []
    for func, (_cc, _nc, tt, _ct, _callers) in stats.items():
        for lab, frac in shares(func).items():
            cats[lab] = cats.get(lab, 0.0) + tt * frac
        rows.append((tt, f"{Path(func[0]).name}:{func[2]}"))
    rows.sort(reverse=True)
    total = sum(cats.values())
    ordered = sorted(cats.items(), key=lambda kv: -kv[1])
    return {
        "total_s": total,
        "by_category_s": dict(ordered),
        "by_category_fraction": {k: v / total for k, v in ordered} if total else {},
        "top_functions": [{"tottime_s": round(t, 4), "function": f} for t, f in rows[:15]],
    }


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet():
    """No warnings and only errors from the libraries' loggers while the benchmark runs (restored after)."""
    names = ("", "jobflow", "maggma", "atomate2", "phonon_flows", "mace", "matplotlib", "pymatgen")
    levels = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "mace-torch", "e3nn", "phonopy", "atomate2", "jobflow", "maggma", "pymatgen", "ase",
                "numpy", "phonon_flows"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _max_rss_mb() -> float | None:
    """Peak resident memory of this process over its whole life (ru_maxrss)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def warm_up(model_path: Path, device: str, dtypes: tuple[str, ...]) -> None:
    """Imports, first-call work (opt_einsum paths, allocator) and one phonopy run, outside the timings."""
    with contextlib.suppress(ImportError):  # method b only
        import atomate2.forcefields.flows.phonons  # noqa: F401
    import mace.calculators  # noqa: F401
    import phonon_flows.makers.batched_phonons  # noqa: F401
    import phonon_flows.makers.phonons  # noqa: F401
    from ase.build import bulk
    from mace.calculators import MACECalculator

    atoms = bulk("Si", "diamond", a=5.431) * (2, 2, 2)
    for dtype in dtypes:
        calc = MACECalculator(model_paths=str(model_path), device=device, default_dtype=dtype)
        atoms.calc = calc
        atoms.get_forces()
    for material in MATERIALS:  # inputs built once, outside every timing
        material.structure()
    m = Material("Si", "diamond", [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    frequencies_from_fc(m, np.zeros((2, 2, 3, 3)), common_qpoints(2))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} (CI-sized smoke run)")
    p.add_argument("--materials", default=None, help="comma-separated subset of: " + ", ".join(m.name for m in MATERIALS))
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs this process may use)")
    p.add_argument("--out", default=str(REPO / "bench_output" / "phonon_throughput.json"), help="results JSON")
    p.add_argument("--model", default=None, help="MACE model file (default: build the fixed benchmark model)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--workers", default="auto",
                   help="phonopy worker processes of the batched job (d, d32): a number, or auto = "
                        "cpus - 1 with a GPU, cpus // 2 on CPU (at least 1)")
    p.add_argument("--screening-workers", type=int, default=0,
                   help="ScreeningMaker(postprocess_workers=N) for s, s32 (default 0: the default screening path)")
    p.add_argument("--repeat", type=int, default=1, help="repeat the timings; the best (shortest) run counts")
    p.add_argument("--profile", action="store_true", help="also profile each method once on the first material")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def select_materials(args) -> list[Material]:
    if args.materials:
        names = [n.strip() for n in args.materials.split(",") if n.strip()]
    elif args.quick:
        names = list(QUICK)
    else:
        return list(MATERIALS)
    by_name = {m.name: m for m in MATERIALS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown material(s) {unknown}; choose from {sorted(by_name)}")
    return [by_name[n] for n in names]


def main(argv=None) -> dict[str, Any]:
    """Run the benchmark (arguments as on the command line); returns the report also written as JSON."""
    import torch

    args = parse_args(argv)
    threads_before = torch.get_num_threads()
    workdir = Path(tempfile.mkdtemp(prefix="phonon_bench_"))
    try:
        with _quiet():
            return _main(args, argv, workdir)
    finally:
        torch.set_num_threads(threads_before)
        shutil.rmtree(workdir, ignore_errors=True)


def _main(args, argv, workdir: Path) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from make_model import make_model, sha256

    from phonon_flows.engines.mace import resolve_device

    device = resolve_device(args.device)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(int(threads))
    materials = select_materials(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; choose from {METHODS}")
    out_path = Path(args.out).resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # absolute: the jobs run in their own folders
    model_path = (Path(args.model) if args.model else make_model(out_path.parent / "bench_mace.model")).resolve()
    n_params = int(sum(p.numel() for p in torch.load(str(model_path), weights_only=False).parameters()))
    progress = not args.no_progress
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.workers == "auto":
        workers = max(1, cpus - 1) if device.startswith("cuda") else max(1, cpus // 2)
    else:
        workers = int(args.workers)

    print(f"phonon throughput: {len(materials)} materials, device {device} ({_device_name(device)}), "
          f"torch threads {torch.get_num_threads()}, model {model_path.name} ({n_params} parameters)", flush=True)
    warm_up(model_path, device, ("float64", "float32") if {"c32", "d32", "s32"} & set(methods) else ("float64",))
    load_before = machine_load()

    qpts = common_qpoints()
    results: dict[str, Any] = {m: {"per_material": {}} for m in methods}
    freqs: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    info: dict[str, dict[str, Any]] = {}

    fcs: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}  # one record per repeat

    def measured(rec: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One call with stage timers, memory sampler, wall and CPU clocks, added into ``rec``."""
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem, StageTimer() as stages:
            t0, c0 = time.perf_counter(), time.process_time()
            r = fn()
            if cuda:
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if cuda:
            rec["peak_gpu_mb"] = max(rec.get("peak_gpu_mb", 0.0), torch.cuda.max_memory_allocated() / 2**20)
        rec["seconds"] += r["seconds"]
        rec["wall_s"] += wall
        rec["cpu_s"] += cpu
        for st, sec in stages.seconds.items():
            rec["stages"][st] = rec["stages"].get(st, 0.0) + sec
        rec["peak_rss_mb"] = max(rec["peak_rss_mb"], mem.peak_mb)
        rec["rss_increase_mb"] = max(rec["rss_increase_mb"], mem.peak_mb - mem.start_mb)
        return r

    def new_record() -> dict[str, Any]:
        return {"seconds": 0.0, "wall_s": 0.0, "cpu_s": 0.0, "stages": {}, "peak_rss_mb": 0.0,
                "rss_increase_mb": 0.0, "per_material": {}}

    per_material_runs = {
        "a": lambda m: run_serial(m, model_path, device),
        "b": lambda m: run_atomate2(m, model_path, device, workdir),
        "c": lambda m: run_phonon_flows(m, model_path, device, "float64", workdir),
        "c32": lambda m: run_phonon_flows(m, model_path, device, "float32", workdir),
    }
    serial_keys = [k for k in ("a", "b", "c", "c32") if k in methods]
    batched_keys = [(k, dt) for k, dt in (("d", "float64"), ("d32", "float32"), ("s", "float64"), ("s32", "float32"))
                    if k in methods]
    for rep in range(args.repeat):
        recs = {k: new_record() for k in methods}
        # round robin over the methods, material by material, starting with a different method each
        # time: on a shared machine the load drifts, and this spreads the drift over all methods
        bar = tqdm(total=len(materials) * len(serial_keys) + len(batched_keys), disable=not progress, leave=False,
                   desc=f"repeat {rep + 1}/{args.repeat}")
        for i, mat in enumerate(materials):
            order = serial_keys[i % len(serial_keys):] + serial_keys[: i % len(serial_keys)] if serial_keys else []
            for key in order:
                bar.set_postfix_str(f"({key}) {mat.name}")
                r = measured(recs[key], lambda: per_material_runs[key](mat))
                fcs[key][mat.name] = r.pop("force_constants")
                r.pop("forces", None)
                recs[key]["per_material"][mat.name] = r
                if "natom_supercell" in r:
                    info.setdefault(mat.name, {}).update(natom_supercell=r["natom_supercell"],
                                                         n_displacements=r["n_displacements"])
                    if "natom_primitive" in r:
                        info[mat.name]["natom_primitive"] = r["natom_primitive"]
                bar.update()
        for key, dtype in batched_keys:
            bar.set_postfix_str(f"({key}) all materials")
            if key.startswith("s"):
                r = measured(recs[key], lambda: run_screening(materials, model_path, device, dtype, workdir,
                                                                   args.screening_workers))
                recs[key]["batch_timings_s"] = r["batch_timings_s"]
                recs[key]["n_jobs"] = r["n_jobs"]
                recs[key]["postprocess_workers"] = args.screening_workers
            else:
                r = measured(recs[key], lambda: run_phonon_flows_batched(materials, model_path, device, dtype,
                                                                        workdir, workers))
                recs[key]["postprocess_workers"] = workers
            fcs[key].update(r["force_constants"])
            for name, sizes in r["sizes"].items():
                info.setdefault(name, {}).update(sizes)
            recs[key]["store"] = r["store"]
            bar.update()
        bar.close()
        for key in methods:
            runs[key].append(recs[key])

    for key in methods:
        best = min(runs[key], key=lambda rec: rec["seconds"])
        best["repeats_s"] = [rec["seconds"] for rec in runs[key]]
        best["stages_s"] = dict(sorted(best.pop("stages").items(), key=lambda kv: -kv[1]))
        best["stages_s"]["other (jobflow, documents, conversions)"] = max(
            0.0, best["seconds"] - sum(best["stages_s"].values()))
        if not best["per_material"]:
            best.pop("per_material")
        forces = best["stages_s"].get("forces (model + neighbour list)", 0.0)
        best["forces_share"] = forces / best["seconds"] if best["seconds"] > 0 else None
        results[key] = best
    load_after = machine_load()

    # frequencies on the common q-points, outside the timings
    freqs_raw: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    for key in methods:
        for mat in materials:
            freqs_raw[key][mat.name], freqs[key][mat.name] = frequencies_from_fc(mat, fcs[key][mat.name], qpts)

    # ---- throughput, ratios
    for key in methods:
        rec = results[key]
        rec["label"] = METHOD_LABELS[key]
        rec["materials_per_minute"] = 60.0 * len(materials) / rec["seconds"] if rec["seconds"] > 0 else None
    ratios = {}

    def ratio(num: str, den: str) -> float | None:
        if num in results and den in results and results[num]["seconds"] > 0:
            return results[den]["seconds"] / results[num]["seconds"]
        return None

    pairs = {"c/a": ("c", "a"), "c/b": ("c", "b"), "c32/a": ("c32", "a"), "c32/b": ("c32", "b"),
             "d/a": ("d", "a"), "d/b": ("d", "b"), "d32/a": ("d32", "a"), "d32/b": ("d32", "b"), "a/b": ("a", "b"),
             "s/a": ("s", "a"), "s/b": ("s", "b"), "s32/a": ("s32", "a"), "s32/b": ("s32", "b")}
    for name, (num, den) in pairs.items():
        value = ratio(num, den)
        if value is not None:
            ratios[name] = value

    # ---- agreement of frequencies
    agreement: dict[str, Any] = {
        "qpoints": len(qpts), "tolerance_THz": AGREEMENT_TOL_THZ,
        "compared": "frequencies from each method's force constants after one common (phonopy translational + "
                    "permutation) symmetrization; as_reported: from the force constants as each method stores them",
        "max_abs_diff_THz": {}, "per_material_THz": {}, "as_reported_max_abs_diff_THz": {}}
    ref = "a" if "a" in methods else None
    if ref:
        for key in methods:
            if key in (ref, "c32", "d32", "s32"):
                continue
            diffs = {m.name: float(np.abs(freqs[key][m.name] - freqs[ref][m.name]).max()) for m in materials}
            agreement["per_material_THz"][f"{key}_vs_{ref}"] = diffs
            agreement["max_abs_diff_THz"][f"{key}_vs_{ref}"] = max(diffs.values())
            agreement["as_reported_max_abs_diff_THz"][f"{key}_vs_{ref}"] = max(
                float(np.abs(freqs_raw[key][m.name] - freqs_raw[ref][m.name]).max()) for m in materials)
        agreement["all_agree"] = all(v <= AGREEMENT_TOL_THZ for v in agreement["max_abs_diff_THz"].values())
    float32 = None
    for key32, key64 in (("c32", "c"), ("d32", "d"), ("s32", "s")):
        base = key64 if key64 in methods else ref
        if key32 in methods and base:
            diffs = {m.name: float(np.abs(freqs_raw[key32][m.name] - freqs_raw[base][m.name]).max()) for m in materials}
            float32 = float32 or {"tolerance_THz": FLOAT32_TOL_THZ, "max_abs_diff_THz": 0.0, "comparisons": {}}
            float32["comparisons"][f"{key32}_vs_{base}"] = {"max_abs_diff_THz": max(diffs.values()),
                                                            "per_material_THz": diffs}
            float32["max_abs_diff_THz"] = max(float32["max_abs_diff_THz"], max(diffs.values()))
            float32["within_tolerance"] = float32["max_abs_diff_THz"] <= FLOAT32_TOL_THZ
    freq_range = {m.name: [float(freqs[methods[0]][m.name].min()), float(freqs[methods[0]][m.name].max())]
                  for m in materials}

    # ---- database cost per material
    db = {}
    for key in ("b", "c", "c32"):
        if key in methods:
            per = [v["store"] for v in results[key]["per_material"].values()]
            db[key] = {
                "documents_per_material": float(np.mean([p["documents"] for p in per])),
                "docs_store_documents_per_material": float(np.mean([p["docs_documents"] for p in per])),
                "data_store_documents_per_material": float(np.mean([p["data_documents"] for p in per])),
                "bytes_per_material": float(np.mean([p["bytes"] for p in per])),
                "docs_store_bytes_per_material": float(np.mean([p["docs_bytes"] for p in per])),
                "data_store_bytes_per_material": float(np.mean([p["data_bytes"] for p in per])),
                "per_material": {name: v["store"] for name, v in results[key]["per_material"].items()},
            }
    for key in ("d", "d32", "s", "s32"):
        if key in methods:
            s = results[key]["store"]
            db[key] = {"documents_per_material": s["documents"] / len(materials),
                       "bytes_per_material": s["bytes"] / len(materials), "total": s}

    # ---- profile
    profile = {}
    if args.profile:
        first = materials[0]
        runners = {
            "a": lambda: run_serial(first, model_path, device),
            "b": lambda: run_atomate2(first, model_path, device, workdir),
            "c": lambda: run_phonon_flows(first, model_path, device, "float64", workdir),
            "c32": lambda: run_phonon_flows(first, model_path, device, "float32", workdir),
            "d": lambda: run_phonon_flows_batched(materials, model_path, device, "float64", workdir, workers),
            "d32": lambda: run_phonon_flows_batched(materials, model_path, device, "float32", workdir, workers),
            "s": lambda: run_screening(materials, model_path, device, "float64", workdir, args.screening_workers),
            "s32": lambda: run_screening(materials, model_path, device, "float32", workdir, args.screening_workers),
        }
        for key in tqdm(methods, desc="profiling", disable=not progress, leave=False):
            profile[key] = profile_breakdown(runners[key])
            profile[key]["material"] = first.name if key not in ("d", "d32", "s", "s32") else "all"

    targets = {}
    if "c/a" in ratios:
        targets["c/a >= 1.0 (float64, same frequencies)"] = {
            "value": ratios["c/a"], "reached": bool(ratios["c/a"] >= TARGETS["c/a float64"]
                                                    and agreement.get("all_agree", False))}
    if "c32/a" in ratios and float32:
        targets["c32/a >= 1.5 (float32 within 0.01 THz)"] = {
            "value": ratios["c32/a"], "reached": bool(ratios["c32/a"] >= TARGETS["c/a float32"] and float32["within_tolerance"])}
    if "c/b" in ratios:
        targets["c/b >= 3"] = {"value": ratios["c/b"], "reached": bool(ratios["c/b"] >= TARGETS["c/b"])}
    if "d/a" in ratios:
        targets["d/a >= 1.0 (batched job, float64, same frequencies)"] = {
            "value": ratios["d/a"], "reached": bool(ratios["d/a"] >= TARGETS["c/a float64"]
                                                    and agreement.get("all_agree", False))}
    if "d32/a" in ratios and float32:
        targets["d32/a >= 1.5 (batched job, float32 within 0.01 THz)"] = {
            "value": ratios["d32/a"], "reached": bool(ratios["d32/a"] >= TARGETS["c/a float32"]
                                                      and float32["within_tolerance"])}

    for key in ("s", "s32"):
        if f"{key}/a" in ratios:
            targets[f"{key}/a >= 2.5 (default screening path, documents stored)"] = {
                "value": ratios[f"{key}/a"], "reached": bool(ratios[f"{key}/a"] >= TARGETS["s/a"])}
        if f"{key}/b" in ratios:
            targets[f"{key}/b >= 10 (default screening path vs atomate2)"] = {
                "value": ratios[f"{key}/b"], "reached": bool(ratios[f"{key}/b"] >= TARGETS["s/b"])}
        if key in results and results[key].get("forces_share") is not None:
            targets[f"{key}: share of wall time in the model's force calls >= 0.9"] = {
                "value": results[key]["forces_share"],
                "reached": bool(results[key]["forces_share"] >= TARGETS["s forces share"])}

    for mat in materials:
        s = mat.structure()
        info.setdefault(mat.name, {}).update(formula=s.composition.reduced_formula, natom_unit_cell=len(s),
                                             prototype=mat.prototype, supercell_matrix=mat.supercell_matrix)
    report = {
        "benchmark": "phonon_throughput",
        "command": "python benchmarks/phonon_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "postprocess_workers": workers,
        "machine_load": idleness(load_before, load_after, cpus),
        "machine": {"device": device, "device_name": _device_name(device), "torch_threads": torch.get_num_threads(),
                    "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "platform": platform.platform(), "python": platform.python_version(), "versions": _versions(),
                    "process_max_rss_mb": _max_rss_mb()},
        "model": {"file": model_path.name, "sha256": sha256(model_path), "parameters": n_params,
                  "hidden_irreps": "16x0e + 16x1o", "r_max_A": 5.0, "num_interactions": 2, "correlation": 3,
                  "trained": False},
        "settings": {"displacement_A": DISPLACEMENT, "symprec": SYMPREC, "temperatures_K": list(TEMPERATURES),
                     "mesh_length_A": MESH_LENGTH, "cutoff_frequency_THz": CUTOFF_FREQUENCY,
                     "band_npoints": BAND_NPOINTS},
        "materials": info,
        "n_materials": len(materials),
        "n_displaced_supercells": int(sum(v.get("n_displacements", 0) for v in info.values())),
        "methods": results,
        "ratios": ratios,
        "targets": targets,
        "agreement": agreement,
        "float32": float32,
        "frequency_range_THz": freq_range,
        "database_cost": db,
        "profile": profile,
    }
    out_path.write_text(json.dumps(report, indent=2, default=_json_default))
    print_table(report)
    print(f"results written to {out_path}")
    return report


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


SHORT_LABELS = {
    "a": "serial ASE + phonopy", "b": "atomate2 PhononMaker", "c": "phonon_flows PhononMaker f64",
    "c32": "phonon_flows PhononMaker f32", "d": "phonon_flows batched job f64", "d32": "phonon_flows batched job f32",
    "s": "default screening + docs f64", "s32": "default screening + docs f32",
}


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(130, Console().width))
    methods = report["methods"]
    table = Table(title=f"phonon throughput: {report['n_materials']} materials, "
                        f"{report['n_displaced_supercells']} displaced supercells, "
                        f"{report['machine']['device']} ({report['machine']['device_name']}), "
                        f"{report['machine']['torch_threads']} torch threads")
    for h in ("", "method", "wall s", "CPU s", "materials/min", "in force calls", "peak RSS MB", "docs/material",
              "kB/material"):
        table.add_column(h, justify="left" if h in ("", "method") else "right")
    for key, rec in methods.items():
        db = report["database_cost"].get(key, {})
        table.add_row(key, SHORT_LABELS.get(key, key), f"{rec['seconds']:.2f}", f"{rec['cpu_s']:.2f}",
                      f"{rec['materials_per_minute']:.2f}",
                      f"{rec['forces_share'] * 100:.0f} %" if rec.get("forces_share") is not None else "-",
                      f"{rec['peak_rss_mb']:.0f}",
                      f"{db['documents_per_material']:.1f}" if db else "-",
                      f"{db['bytes_per_material'] / 1e3:.0f}" if db else "-")
    console.print(table)

    stages = sorted({st for rec in methods.values() for st in rec.get("stages_s", {})},
                    key=lambda st: -max(rec.get("stages_s", {}).get(st, 0.0) for rec in methods.values()))
    st_table = Table(title="where the time goes (wall seconds per stage, all materials; for d/d32 the phonopy "
                           "stages run in worker processes, overlapped, and are not listed)")
    st_table.add_column("stage")
    for key in methods:
        st_table.add_column(key, justify="right")
    for st in stages:
        st_table.add_row(st, *[f"{methods[k].get('stages_s', {}).get(st, 0.0):.2f}" for k in methods])
    console.print(st_table)

    ml = report["machine_load"]
    console.print(f"machine load: load average (1/5/15 min) before {ml['loadavg_before']}, after "
                  f"{ml['loadavg_after']} on {ml['cpus']} CPUs; other processes used "
                  f"{ml['other_processes_cpu_share'] * 100:.0f} % of the CPUs during the run -> "
                  f"{'idle' if ml['idle'] else 'NOT idle: ratios are not those of an idle machine'}")
    console.print("ratios of materials/min: " + ", ".join(f"{k} = {v:.2f}" for k, v in report["ratios"].items()))
    ag = report["agreement"]
    if ag.get("max_abs_diff_THz"):
        console.print("max |Δf| vs (a) on the common q-points: "
                      + ", ".join(f"{k} {v:.1e} THz" for k, v in ag["max_abs_diff_THz"].items())
                      + f" -> {'agree' if ag.get('all_agree') else 'DISAGREE'} to {ag['tolerance_THz']:g} THz")
    if report.get("float32"):
        f32 = report["float32"]
        parts = ", ".join(f"{k} {v['max_abs_diff_THz']:.1e} THz" for k, v in f32["comparisons"].items())
        console.print(f"float32 vs float64: max |Δf| {parts} "
                      f"({'within' if f32['within_tolerance'] else 'OUTSIDE'} {f32['tolerance_THz']} THz)")
    for name, t in report["targets"].items():
        console.print(f"target {name}: {t['value']:.2f} {'reached' if t['reached'] else 'NOT reached'}")
    for key, prof in report.get("profile", {}).items():
        parts = ", ".join(f"{k} {v * 100:.0f}%" for k, v in prof["by_category_fraction"].items())
        console.print(f"cProfile ({key}, {prof['material']}): {parts}")


if __name__ == "__main__":
    main()
