"""Smoke test of benchmarks/phonon_throughput.py: it runs end to end on one small material, the
serial baseline, atomate2 and phonon_flows (per material, float32, batched) agree on the
frequencies, and the JSON report holds what `make bench` promises. No timing is asserted."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _benchmark(name: str):
    """benchmarks/<name>.py as a module, with its sibling modules importable while it is in use."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        _load("make_model")
        yield _load(name)
    finally:
        sys.path.remove(str(BENCH_DIR))


@pytest.fixture(scope="module")
def bench():
    with _benchmark("phonon_throughput") as module:
        yield module


def test_benchmark_model_is_deterministic(tmp_path, bench):
    make_model = sys.modules["make_model"]
    a = make_model.make_model(tmp_path / "a.model")
    b = make_model.make_model(tmp_path / "b.model")
    import torch

    pa = torch.load(a, weights_only=False).state_dict()
    pb = torch.load(b, weights_only=False).state_dict()
    assert pa.keys() == pb.keys()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_material_set_matches_the_brief(bench):
    """>= 10 materials, 1-6 atoms per cell, 100-200 atom supercells, --quick picks 3."""
    assert len(bench.MATERIALS) >= 10
    for mat in bench.MATERIALS:
        s = mat.structure()
        n_super = round(abs(np.linalg.det(np.array(mat.supercell_matrix)))) * len(s)
        assert 100 <= n_super <= 200, (mat.name, n_super)
    assert len(bench.select_materials(bench.parse_args(["--quick"]))) == 3


@pytest.mark.slow
def test_benchmark_runs_and_methods_agree(tmp_path, bench):
    out = tmp_path / "bench" / "phonon_throughput.json"
    report = bench.main(["--quick", "--materials", "Si", "--methods", "a,b,c,c32,d,s", "--workers", "1",
                         "--threads", "1", "--no-progress", "--out", str(out)])

    saved = json.loads(out.read_text())
    assert saved["n_materials"] == 1
    assert set(saved["methods"]) == {"a", "b", "c", "c32", "d", "s"}
    for rec in saved["methods"].values():
        assert rec["seconds"] > 0 and rec["materials_per_minute"] > 0 and rec["peak_rss_mb"] > 0
        assert 0 < rec["forces_share"] < 1  # every method says how much of its time the model's force calls take
    assert {"c/a", "c/b", "c32/a", "d/a", "s/a", "s/b"} <= set(saved["ratios"])
    load = saved["machine_load"]  # how idle the machine was
    assert len(load["loadavg_before"]) == 3 and 0 <= load["other_processes_cpu_share"] <= 1
    assert saved["methods"]["s"]["store"]["docs_documents"] >= 3  # campaign record, the pack, the PhononDoc

    # same forces, same phonopy: frequencies agree to 1e-4 THz (here to ~1e-7)
    assert report["agreement"]["all_agree"], report["agreement"]
    assert set(report["agreement"]["max_abs_diff_THz"]) == {"b_vs_a", "c_vs_a", "d_vs_a", "s_vs_a"}
    assert max(report["agreement"]["max_abs_diff_THz"].values()) < 1e-4
    # the model gives non-trivial phonons: agreement is not agreement of zeros
    lo, hi = report["frequency_range_THz"]["Si"]
    assert hi > 1.0
    # float32 costs little accuracy, but is not bit-identical
    f32 = report["float32"]["comparisons"]["c32_vs_c"]["max_abs_diff_THz"]
    assert 0 < f32 < 0.01

    # database cost: atomate2 writes one document per displacement job (+ data), phonon_flows a constant few
    db = report["database_cost"]
    assert db["c"]["docs_store_documents_per_material"] == 1
    assert db["b"]["documents_per_material"] > db["c"]["documents_per_material"]
    assert db["b"]["bytes_per_material"] > db["c"]["bytes_per_material"]


def _curve(ns, maes, held=("mp-1", "mp-2"), epochs=40, command="run"):
    rows = [{"n_train": n, "held_out": {"freq_mae_THz": m, "freq_mae_median_THz": m / 2},
             "training": {"freq_mae_THz": m / 10}, "dft_supercells_recipe": 6 * n,
             "dft_supercells_finite_displacement": 4 * n} for n, m in zip(ns, maes)]
    return {"args": {"epochs": epochs, "irreps": None, "seed": 7, "n": list(ns)}, "held_out_ids": list(held),
            "rows": rows, "not_run": [130], "wall_s": 60.0, "date": "2026-12-04", "command": command}


def test_learning_curve_runs_merge_into_one_curve(tmp_path):
    """Two runs of benchmarks/learning_curve.py (10-80, then 130) make one curve: rows by N, the later
    run's row wins at the same N, fits over all rows, both commands kept; other held-out sets or
    settings are refused."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        lc = _load("learning_curve")
    finally:
        sys.path.remove(str(BENCH_DIR))
    first = _curve([10, 20, 40, 80], [8.0, 6.0, 4.0, 3.0], command="first")
    second = _curve([80, 130], [2.5, 2.0], command="second")
    second["not_run"] = []
    merged = lc.merge_results(first, second)
    assert [r["n_train"] for r in merged["rows"]] == [10, 20, 40, 80, 130]
    assert merged["rows"][3]["held_out"]["freq_mae_THz"] == 2.5 and merged["not_run"] == []
    assert merged["commands"] == ["first", "second"] and merged["wall_s"] == 120.0
    ns, maes = [10, 20, 40, 80, 130], [8.0, 6.0, 4.0, 2.5, 2.0]
    slope = np.polyfit(np.log(ns), np.log(maes), 1)[0]
    assert merged["fit_held_out"]["slope"] == pytest.approx(slope)
    text = lc.write_outputs({**merged, "args": {**merged["args"], "folder_name": "family", "dtype": None},
                             "n_held_compositions": 1, "device": "CPU"}, tmp_path)
    assert "| 130 |" in text and "`first`; `second`" in text and (tmp_path / "learning_curve.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="different materials"):
        lc.merge_results(first, _curve([130], [2.0], held=("mp-3",)))
    with pytest.raises(SystemExit, match="epochs"):
        lc.merge_results(first, _curve([130], [2.0], epochs=20))


def _material(structure, mid):
    from phonon_flows.demo import PhonondbMaterial

    return PhonondbMaterial(material_id=mid, mp_id=mid, formula=structure.composition.reduced_formula,
                            spacegroup=None, path="", structure=structure,
                            supercell_matrix=[[2, 0, 0], [0, 2, 0], [0, 0, 2]], n_displacements=2)


def test_learning_curve_bond_split_holds_out_compositions_whose_bonds_are_in_the_pool():
    """--split bonds-in-pool: a held-out composition (all its polymorphs) has every bonded element pair
    in at least two pool materials of other compositions; the pool starts with one material per
    held-out bond; ZnS with no Zn-S elsewhere is never held out; the bond coverage counts it all."""
    from pymatgen.core import Lattice, Structure

    sys.path.insert(0, str(BENCH_DIR))
    try:
        lc = _load("learning_curve")
    finally:
        sys.path.remove(str(BENCH_DIR))

    def zb(a, cation, anion):
        return Structure.from_spacegroup("F-43m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.25] * 3])

    def rs(a, cation, anion):
        return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5] * 3])

    def half(s, old, new, k=0):  # the k-th site of ``old`` made ``new``: both bonds in one crystal
        s = s.copy()
        s.replace([i for i, site in enumerate(s) if site.specie.symbol == old][k], new)
        return s

    structures = {
        "ZnSe-zb": zb(5.67, "Zn", "Se"), "ZnSe-rs": rs(5.3, "Zn", "Se"),  # Zn-Se also in the two Zn4Se3Te
        "ZnS-zb": zb(5.41, "Zn", "S"), "ZnS-rs": rs(5.1, "Zn", "S"),  # Zn-S nowhere else
        "CdTe-zb": zb(6.48, "Cd", "Te"),
        "Zn4Se3Te-a": half(zb(5.8, "Zn", "Se"), "Se", "Te"), "Zn4Se3Te-b": half(zb(5.9, "Zn", "Se"), "Se", "Te", 1),
    }
    materials = {mid: _material(s, mid) for mid, s in structures.items()}
    held, pool = lc.choose_split_bonds(materials, 3, seed=7, max_atoms=128)
    assert held == ["ZnSe-rs", "ZnSe-zb"]  # Zn4Se3Te: Zn-Te in no other composition; ZnS: Zn-S nowhere else
    assert sorted(pool) == sorted(set(materials) - set(held))
    assert pool[0].startswith("Zn4Se3Te")  # the greedy cover: Zn-Se first
    cover = lc.bond_coverage(materials, held, pool[:1])
    assert cover == {"bonds": 1, "bonds_trained": 1, "materials_all_bonds_trained": 2, "untrained": []}
    assert lc.bond_coverage(materials, held, ["ZnS-zb", "CdTe-zb"])["untrained"] == ["Se-Zn"]
    assert lc.bond_coverage(materials, ["ZnS-zb", "CdTe-zb"], ["ZnSe-zb"]) == {
        "bonds": 2, "bonds_trained": 0, "materials_all_bonds_trained": 0, "untrained": ["Cd-Te", "S-Zn"]}


def test_screen_covered_summary_splits_trained_and_new_compositions():
    """benchmarks/screen_covered.py's figures: per-material MAEs pooled, stability agreement, A_vib
    where both sides have one, and the same for trained (by reduced formula) and new compositions;
    materials that could not be compared are left out of the figures."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        sc = _load("screen_covered")
    finally:
        sys.path.remove(str(BENCH_DIR))

    def row(mid, formula, mae, stable_m, stable_d, a_m, a_d):
        return {"material_id": mid, "formula": formula, "freq_mae_THz": mae, "stable_mlip": stable_m,
                "stable_dft": stable_d, "A_vib_300_mlip_meV": a_m, "A_vib_300_dft_meV": a_d}

    rows = [row("a", "Zn2S2", 0.2, True, True, -10.0, -11.0), row("b", "ZnS", 0.4, True, True, -9.0, -9.5),
            row("c", "NaAlSe2", 7.0, False, True, -20.0, -30.0), row("d", "K2O", 3.0, True, True, None, -5.0),
            {"material_id": "e", "formula": "BPO4", "error": "comparison: ValueError: primitive cells of 16 and 8"}]
    s = sc.summarize(rows, {"ZnS"})
    assert s["n_compared"] == 4 and s["freq_mae_THz_median"] == pytest.approx(1.7)
    assert s["stability_agreement"] == "3/4" and s["materials_below_0p5_THz"] == 2
    assert s["A_vib_300_mae_meV"] == pytest.approx((1.0 + 0.5 + 10.0) / 3) and s["A_vib_compared"] == 3
    assert s["composition_trained"]["n_compared"] == 2 and s["composition_trained"]["stability_agreement"] == "2/2"
    assert s["composition_new"]["n_compared"] == 2 and s["composition_new"]["freq_mae_THz_median"] == pytest.approx(5.0)


@pytest.fixture
def screen():
    with _benchmark("screen_sample") as module:
        yield module


def _rows(n: int) -> list[dict]:
    return [{"mp_id": f"mp-{i}", "displacements": 1 + i % 7, "atoms_supercell": 20 + 10 * (i % 5)} for i in range(n)]


def _part_report(screen, rows, part, parts, of_n, seconds):
    return {"mode": "local", "command": f"--part {part}/{parts}", "campaign": f"c-part{part}of{parts}",
            "n_materials": len(rows), "materials": [r["mp_id"] for r in rows],
            "part": {"part": part, "parts": parts, "of_n": of_n},
            "phonondb_displacements": sum(r["displacements"] for r in rows),
            "supercell_atoms": {"min": min(r["atoms_supercell"] for r in rows),
                                "max": max(r["atoms_supercell"] for r in rows)},
            "model": {"file": "m.model", "dtype": "float32"}, "wall_s": seconds,
            "machine": {"loadavg": [0.1, 0.1, 0.1]},
            "result": {"phonon_docs": len(rows), "failed_docs": 1, "stable": 2, "jobs": 3, "read_inputs_s": 1.0,
                       "build_flow_s": 2.0, "run_s": seconds - 3.0,
                       "store": {"docs_documents": 10, "docs_bytes": 1000, "data_documents": 5,
                                 "data_bytes": 5000, "data_store": "S", "docs_store": "D"},
                       "batch_timings_s": {"forces_s": 0.5 * seconds, "total_s": seconds},
                       "peak_rss": {"this_process_mb": 100.0 * part, "largest_child_mb": 0.0}}}


def test_screen_sample_parts_are_disjoint_balanced_and_combine(screen):
    rows = _rows(103)
    parts = [screen.split_part(rows, k, 4) for k in range(1, 5)]
    ids = [r["mp_id"] for part in parts for r in part]
    assert sorted(ids) == sorted(r["mp_id"] for r in rows) and len(set(ids)) == len(rows)
    costs = [sum(screen.cost_proxy(r) for r in part) for part in parts]
    assert max(costs) / min(costs) < 1.15, costs  # about equal cost, not only equal counts
    assert screen.parse_part("2/4") == (2, 4)
    with pytest.raises(Exception, match="between 1 and P"):
        screen.parse_part("5/4")

    reports = [_part_report(screen, part, k, 4, 103, 60.0 * k) for k, part in enumerate(parts, start=1)]
    combined = screen.combine_parts(reports[:2])
    assert not combined["part"]["complete"] and combined["part"]["parts_done"] == [1, 2]
    combined = screen.combine_parts(reports[::-1])
    assert combined["part"]["complete"] and combined["n_materials"] == 103
    assert combined["wall_s"] == pytest.approx(600.0)
    assert combined["materials_per_minute_end_to_end"] == pytest.approx(103 / 10)
    assert combined["result"]["phonon_docs"] == 103 and combined["result"]["failed_docs"] == 4
    assert combined["result"]["store"]["data_bytes_per_material"] == pytest.approx(20000 / 103)
    assert combined["result"]["batch_timings_s"]["forces_share_of_batch_jobs"] == pytest.approx(0.5)
    assert combined["result"]["peak_rss"]["this_process_mb"] == 400.0
    with pytest.raises(ValueError, match="repeat a part"):
        screen.combine_parts([reports[0], reports[0]])
    other = _part_report(screen, parts[0], 2, 4, 103, 1.0)
    with pytest.raises(ValueError, match="share materials"):
        screen.combine_parts([reports[0], other])
    mixed = dict(reports[1], model={"file": "m.model", "dtype": "float64"})
    with pytest.raises(ValueError, match="not parts of one run"):
        screen.combine_parts([reports[0], mixed])


def _fireworks_part_report(screen, rows, part, parts, of_n, seconds):
    report = _part_report(screen, rows, part, parts, of_n, seconds)
    result = report["result"]
    del result["peak_rss"], result["stable"]
    result.update(submit_s=0.5, run_s=seconds - 3.5, fireworks=3, launches=3, fireworks_run_more_than_once=0,
                  batch_job_compute_s=0.9 * (seconds - 3.5), fw_states={"COMPLETED": 3},
                  launches_on_a_worker_of_another_category=[], worker_returncodes={"gpu-1": 0, "cpu-1": 0},
                  peak_rss_mb={"gpu-1": 100.0 * part, "cpu-1": 50.0, "submitting_process": 10.0},
                  status_counts={"done": len(rows), "failed": part - 1},
                  status_by_stage={"phonon-mlip": {"done": len(rows)}}, failures=[f"f{part}"] * (part - 1),
                  server_sqlite_bytes=1000 * part)
    report["mode"] = "fireworks"
    return report


def test_screen_sample_combines_fireworks_parts(screen):
    """The FireWorks parts' own numbers (Fireworks, launches, worker memory, overhead) add up."""
    rows = _rows(40)
    reports = [_fireworks_part_report(screen, screen.split_part(rows, k, 2), k, 2, 40, 100.0 * k) for k in (1, 2)]
    read_back = dict(reports[0], result=dict(reports[0]["result"], peak_rss_mb=None))  # --report-only
    assert screen.combine_parts([read_back, reports[1]])["result"]["peak_rss_mb_of_parts"] == [2]
    combined = screen.combine_parts(reports)
    result = combined["result"]
    assert combined["mode"] == "fireworks" and combined["part"]["complete"]
    assert result["fireworks"] == 6 and result["launches"] == 6 and result["fireworks_per_material"] == pytest.approx(6 / 40)
    assert result["fw_states"] == {"COMPLETED": 6} and result["fireworks_run_more_than_once"] == 0
    assert result["peak_rss_mb"] == {"cpu-1": 50.0, "gpu-1": 200.0, "submitting_process": 10.0}
    assert result["run_s"] == pytest.approx(96.5 + 196.5)
    assert result["overhead_share_of_total"] == pytest.approx(0.1)
    assert result["materials_per_minute"] == pytest.approx(60 * 40 / 300.0)
    assert result["status_counts"] == {"done": 40, "failed": 1} and result["failures"] == ["f2"]
    assert result["status_by_stage"] == {"phonon-mlip": {"done": 40}}
    assert result["server_sqlite_bytes_largest_part"] == 2000 and "stable" not in result


def test_dft_demo_settings_builds_valid_mace_overrides():
    import argparse

    from phonon_flows.schemas.training import MaceHyperparameters

    settings = _load("dft_demo_settings")
    ns = dict(hidden_irreps=None, correlation=None, r_max=None, lr=None, mlp_irreps=None, radial_mlp=None)
    assert settings.settings_from_args(argparse.Namespace(**ns)) == {}  # nothing given: the demo's own settings
    hp = settings.settings_from_args(argparse.Namespace(**dict(ns, hidden_irreps="16x0e + 16x1o", correlation=3,
                                                                   radial_mlp="[32, 32]")))
    args = MaceHyperparameters.preset("small", **hp).to_mace_args("train.xyz", "work")
    assert "--hidden_irreps=16x0e + 16x1o" in args and "--correlation=3" in args
    assert "--MLP_irreps=16x0e" in args and "--radial_MLP=[32, 32]" in args and "--max_ell=2" in args
    hp = settings.settings_from_args(argparse.Namespace(**dict(ns, r_max=6.0, seed=7)))
    assert hp == {"r_max": 6.0, "seed": 7}  # a cutoff and a MACE seed, nothing else changed
    args = MaceHyperparameters.preset("small", **hp).to_mace_args("train.xyz", "work")
    assert "--r_max=6.0" in args and "--seed=7" in args


def _mini_phonondb(folder: Path, names: list[str]) -> Path:
    """A phonondb folder laid out as the benchmarks read it (index.json + sample-1000/) from
    entries shipped in the package (CC-BY-4.0, see phonon_flows/data/phonondb/LICENSE.md)."""
    from phonon_flows.core.phonondb import read_phonondb_entry

    shipped = Path(__file__).resolve().parents[1] / "phonon_flows" / "data" / "phonondb"
    (folder / "sample-1000").mkdir(parents=True)
    rows = []
    for name in names:
        src = shipped / name
        (folder / "sample-1000" / name).write_bytes(src.read_bytes())
        entry = read_phonondb_entry(src)
        n_super = int(round(abs(np.linalg.det(entry.supercell_matrix)))) * len(entry.unitcell)
        rows.append({"file": name, "mp_id": entry.mp_id, "formula": entry.formula,
                     "elements": sorted(set(entry.unitcell.symbols)), "atoms_supercell": n_super,
                     "displacements": len(entry.force_sets["first_atoms"]), "born": entry.born_text is not None})
    (folder / "index.json").write_text(json.dumps(rows))
    return folder


@pytest.mark.parametrize("mode", ["local", "fireworks"])
def test_screen_sample_runs_end_to_end(tmp_path, mode, mongo_uri, screen):
    """``screen_sample.py`` as the 1,000-material runs call it (a part of a run, a cheap model), on 2
    shipped crystals: the report is written and holds every material once, and a FireWorks run's
    report can be read back from its work folder (``--report-only``)."""
    data = _mini_phonondb(tmp_path / "phonondb", ["materials-id-1479-bp-f-43m-216.tar.lzma",
                                                  "materials-id-149-si-fd-3m-227.tar.lzma"])
    screen.DATA = data
    args = ["--mode", mode, "--n", "2", "--part", "1/1", "--hidden-irreps", "4x0e + 4x1o", "--r-max", "3.0",
            "--dtype", "float32", "--batch-size", "2", "--model", str(tmp_path / "m.model"),
            "--work", str(tmp_path / "work"), "--no-progress"]
    report = screen.main([*args, "--out", str(tmp_path / "run.json")])
    result = report["result"]
    assert report["n_materials"] == 2 and sorted(report["materials"]) == ["mp-1479", "mp-149"]
    assert result["phonon_docs"] == 2 and result["failed_docs"] == 0
    assert report["part"] == {"part": 1, "parts": 1, "of_n": 2}
    assert [pack["materials"] for pack in result["pack_timings_s"]] == [2]
    assert result["pack_timings_s"][0]["total_s"] == pytest.approx(result["batch_timings_s"]["total_s"], abs=2e-3)
    written = (tmp_path / "run.json").read_text()
    assert "--work WORK" in written and str(tmp_path / "work") not in written  # the run's folder is not named
    if mode == "fireworks":
        assert result["fw_states"] == {"COMPLETED": result["fireworks"]} and result["fireworks_run_more_than_once"] == 0
        assert set(result["peak_rss_mb"]) == {"gpu-1", "cpu-1", "submitting_process"}
        again = screen.main([*args, "--report-only", "--out", str(tmp_path / "again.json")])
        assert again["result"]["phonon_docs"] == 2 and again["result"]["peak_rss_mb"] is None
        assert again["result"]["run_s"] == pytest.approx(result["run_s"])
        assert json.loads((tmp_path / "again.json").read_text())["result"]["fireworks"] == result["fireworks"]


def test_results_name_no_path_of_the_machine_that_ran_them():
    """The recorded benchmark reports hold no absolute path (a work folder in a command or in an
    error message): they travel with the repository, the machine that ran them does not."""
    absolute = re.compile(r'(^|[\s"(\[=:])/(?!/)[A-Za-z_][\w.-]*/[\w.-]+')
    found = {}
    for path in sorted((BENCH_DIR / "results").rglob("*.json")):
        hits = [m.group(0).strip() for m in absolute.finditer(path.read_text())]
        if hits:
            found[path.name] = hits[:3]
    assert not found, found
    assert absolute.search('"--work /some/where"') and not absolute.search('"eV/Å and WORK/runs"')


def test_store_scale_estimate_takes_the_largest_complete_runs(tmp_path, monkeypatch):
    """The 100,000-material estimate reads the largest recorded local and FireWorks runs, passing over
    lone parts and incomplete combinations, and a footprint that was not measured (--full-data 0)."""
    with _benchmark("store_scale") as ss:
        results = tmp_path / "results"
        results.mkdir()

        def report(name, n, wall, threads=2, part=None, store_bytes=(8000.0, 1.0e6), overhead=None):
            rep = {"n_materials": n, "wall_s": wall, "machine": {"torch_threads": threads},
                   "model": {"hidden_irreps": "64x0e + 64x1o", "dtype": "float32"},
                   "result": {"batch_timings_s": {"forces_share_of_batch_jobs": 0.9},
                              "store": {"docs_bytes_per_material": store_bytes[0],
                                        "data_bytes_per_material": store_bytes[1]}}}
            if part is not None:
                rep["part"] = part
            if overhead is not None:
                rep["result"]["overhead_share_of_total"] = overhead
            (results / name).write_text(json.dumps(rep))

        report("screen_local_6.json", 6, 600.0, threads=1)
        report("screen_local_1000_float32_part1of8.json", 125, 2000.0, part={"part": 1, "parts": 8})
        report("screen_local_1000_float32.json", 1000, 16000.0, part={"parts": 8, "complete": True})
        combined = json.loads((results / "screen_local_1000_float32.json").read_text())
        combined["machine"] = [{"torch_threads": 2}] * 8  # a combined report keeps one machine record per part
        (results / "screen_local_1000_float32.json").write_text(json.dumps(combined))
        report("screen_local_2000_float32.json", 2000, 1.0, part={"parts": 8, "complete": False})
        report("screen_fireworks_4.json", 4, 10.0, overhead=0.22)
        report("screen_fireworks_1000.json", 1000, 7500.0, part={"parts": 4, "complete": True}, overhead=0.02)
        monkeypatch.setattr(ss, "HERE", tmp_path)
        est = ss.paper_estimate({"stores": {"mongoeco": {"footprint": {"materials_measured": 0}}}})
    assert est["inputs"] == {"local_run": "screen_local_1000_float32.json", "fireworks_run": "screen_fireworks_1000.json"}
    assert "store" not in est
    assert est["mlip"]["cpu_core_hours_for_100k"] == pytest.approx(16000.0 / 1000 * 2 * 100_000 / 3600)
    assert est["fireworks_overhead_share_measured"] == 0.02
    assert est["store_from_real_screening_docs"]["docs_store_GB"] == pytest.approx(0.8)
