#!/usr/bin/env python
"""Screen the phonondb `sample-1000` crystals a trained model covers, and compare with their DFT phonons.

The model is the one a training campaign stored: by default the demo's (`phonon-flows demo`,
campaign `demo-dft`, in the embedded store `./phonon_flows_data`). Its elements select the
`sample-1000` entries it covers: every element known, phonondb supercell at most `--max-atoms`.
They are screened the way a user screens them: `ScreeningMaker`'s default path (packs of
materials, no relaxation, no total DOS), `run_campaign` on the same store, on phonondb's own
supercells (`DIM`, written on the primitive cell the screening computes). Each PhononDoc is then
compared with the DFT phonons of its entry (phonopy from the entry's FORCE_SETS, VASP PBEsol,
without NAC, as the paper compares):

- frequencies at the same physical q-points: a Γ-centred 4x4x4 grid of the DFT primitive
  reciprocal cell plus the half-zone corners (`core.phonons.common_qpoint_frequencies`). The two
  cells are different settings of one crystal;
- dynamical stability (phonon_flows' criterion on both sides) and A_vib(300 K) per atom.

The demo's model is small (8x0e + 8x1o) and was trained on 31 binaries. Most covered crystals are
ternaries and larger, so this measures transfer to new chemistry, not the recipe's accuracy.

    python benchmarks/screen_covered.py --store-dir phonon_flows_data --campaign demo-dft

Writes `benchmarks/results/screen_covered.json` (per material and pooled). Data: A. Togo,
phonondb (Kyoto University), CC-BY-4.0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from phonon_flows.core.committee import DEFAULT_SPREAD_THRESHOLD_THZ, spread_error_correlation, trusted_and_flagged

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def covered_rows(elements: set[str], max_atoms: int, n: int | None, seed: int) -> list[dict[str, Any]]:
    """sample-1000 index rows whose every element the model knows (seeded subset of ``n``)."""
    from screen_sample import sample_entries

    rows = [r for r in sample_entries(None) if set(r["elements"]) <= elements and r["atoms_supercell"] <= max_atoms]
    if n is not None and n < len(rows):
        rng = np.random.default_rng(seed)
        rows = [rows[i] for i in sorted(rng.choice(len(rows), size=n, replace=False))]
    return rows


def compare(doc: dict[str, Any], results: Any, path: str) -> dict[str, Any]:
    """One screened PhononDoc against the DFT phonons of its phonondb entry: the doc's own unit
    cell, supercell matrix, symprec and force constants, as the screening built them."""
    from pymatgen.core import Structure

    from phonon_flows.core import phonondb as pdb
    from phonon_flows.core.phonons import common_qpoint_frequencies, make_phonopy
    from phonon_flows.makers.phonons import phonon_settings, phonondb_doc_from_import

    symprec = (doc.get("settings") or {}).get("symprec", phonon_settings()["symprec"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlip = make_phonopy(Structure.from_dict(doc["structure"]), doc["supercell_matrix"], symprec=symprec)
        mlip.force_constants = results.force_constants(doc)
        imported, entry = pdb.load_phonondb_entry(path, use_born=False)  # read and built once
        ref = phonondb_doc_from_import(imported, entry, store_phonopy_yaml=False)
        f_dft, f_mlip = common_qpoint_frequencies(imported.phonon, mlip)
    row: dict[str, Any] = {
        "material_id": doc["material_id"], "formula": doc.get("formula"), "natom_supercell": doc.get("natom_supercell"),
        "freq_mae_THz": float(np.mean(np.abs(f_mlip - f_dft))), "freq_max_abs_THz": float(np.max(np.abs(f_mlip - f_dft))),
        "n_qpoints": int(f_dft.shape[0]), "n_bands": int(f_dft.shape[1]),
        "stable_mlip": doc.get("dynamically_stable"), "stable_dft": ref.dynamically_stable,
        "min_frequency_mlip_THz": doc.get("min_frequency_THz"), "min_frequency_dft_THz": ref.min_frequency_THz,
        "committee_spread_THz": doc.get("committee_spread_THz"),
    }
    a_m = ((doc.get("thermal") or {}).get("T300") or {}).get("A_vib_meV_per_atom")
    a_d = ref.thermal["T300"].A_vib_meV_per_atom if "T300" in ref.thermal else None
    row["A_vib_300_mlip_meV"], row["A_vib_300_dft_meV"] = a_m, a_d
    return row


def summarize(rows: list[dict[str, Any]], trained_formulas: set[str] | None = None) -> dict[str, Any]:
    """Pooled figures, and the same for the materials whose composition the model was trained on
    (``composition_trained``) and the others (``composition_new``)."""
    out = _summary(rows)
    if trained_formulas is not None:
        for key, keep in (("composition_trained", True), ("composition_new", False)):
            out[key] = _summary([r for r in rows if (_reduced(r.get("formula")) in trained_formulas) == keep])
    # a committee model: the materials its spread trusts and those it flags, and how the spread ranks errors
    spread = {r["material_id"]: r.get("committee_spread_THz") for r in rows if "freq_mae_THz" in r}
    if any(v is not None for v in spread.values()):
        out["spread_threshold_THz"] = DEFAULT_SPREAD_THRESHOLD_THZ
        for key, ids in zip(("spread_trusted", "spread_flagged"), map(set, trusted_and_flagged(spread)), strict=True):
            out[key] = _summary([r for r in rows if r["material_id"] in ids])
        rho, n = spread_error_correlation(spread, {r["material_id"]: r["freq_mae_THz"] for r in rows
                                                   if "freq_mae_THz" in r})
        out["spread_error_spearman"], out["spread_error_n"] = rho, n
    return out


def _reduced(formula: str | None) -> str | None:
    from pymatgen.core import Composition

    return Composition(formula).reduced_formula if formula else None


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "freq_mae_THz" in r]
    maes = [r["freq_mae_THz"] for r in ok]
    stab = [r for r in ok if r["stable_mlip"] is not None and r["stable_dft"] is not None]
    # A_vib only where both sides have real modes to sum over (phonon_flows leaves it out otherwise)
    av = [abs(r["A_vib_300_mlip_meV"] - r["A_vib_300_dft_meV"]) for r in ok
          if r["A_vib_300_mlip_meV"] is not None and r["A_vib_300_dft_meV"] is not None]
    return {
        "n_compared": len(ok),
        "freq_mae_THz_mean_of_materials": float(np.mean(maes)) if maes else None,
        "freq_mae_THz_median": float(np.median(maes)) if maes else None,
        "materials_below_0p5_THz": int(sum(m < 0.5 for m in maes)),
        "stability_agreement": f"{sum(r['stable_mlip'] == r['stable_dft'] for r in stab)}/{len(stab)}",
        "stable_dft": int(sum(bool(r["stable_dft"]) for r in stab)),
        "stable_mlip": int(sum(bool(r["stable_mlip"]) for r in stab)),
        "A_vib_300_mae_meV": float(np.mean(av)) if av else None, "A_vib_compared": len(av),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store-dir", default="phonon_flows_data", help="embedded store holding the trained model")
    p.add_argument("--mongo-uri", default=None, help="a MongoDB store instead")
    p.add_argument("--campaign", default="demo-dft", help="training campaign whose model screens")
    p.add_argument("--name", default="sample-covered", help="screening campaign name")
    p.add_argument("--max-atoms", type=int, default=200, help="largest phonondb supercell screened")
    p.add_argument("--n", type=int, default=None, help="a seeded random subset of the covered materials")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--work", default=None, help="job folders (default: a temporary folder)")
    p.add_argument("--out", default=str(HERE / "results" / "screen_covered.json"))
    args = p.parse_args(argv)

    import tempfile

    from screen_sample import read_inputs

    from phonon_flows.demo import campaign_outputs
    from phonon_flows.flows import ScreeningMaker
    from phonon_flows.results import PhononResults
    from phonon_flows.runner import run_campaign
    from phonon_flows.store import get_store

    t0 = time.perf_counter()
    store = get_store(mongo_uri=args.mongo_uri) if args.mongo_uri else get_store(store_dir=args.store_dir)
    store.connect()
    model = campaign_outputs(store, args.campaign, "train").get("model") or {}
    sha, elements = model.get("model_sha256"), set(model.get("elements") or [])
    if not sha or not elements:
        sys.exit(f"no trained model of campaign {args.campaign!r} in the store (run `phonon-flows demo` first)")
    trained = {_reduced(o.get("formula")) for o in campaign_outputs(store, args.campaign, "perturb").values()}
    rows = covered_rows(elements, args.max_atoms, args.n, args.seed)
    print(f"model {sha[:12]} of {args.campaign} ({len(elements)} elements): {len(rows)} sample-1000 crystals covered",
          flush=True)
    structures, smats = read_inputs(rows)
    maker = ScreeningMaker(name=args.name, model=sha, store=store, relax="none", batch_size=args.batch_size,
                           engine_kwargs={"device": "cpu"})
    flow = maker.make(structures, supercell_matrices=smats)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="screen_covered_"))
    t_run = time.perf_counter()
    summary = run_campaign(flow, store, progress=True, work_dir=work)
    run_s = time.perf_counter() - t_run
    print(summary.render(), flush=True)
    results = PhononResults(store)
    docs = {d["material_id"]: d for d in results.find(campaign=args.name, failed=None)}
    paths = {r["mp_id"]: r["path"] for r in rows}
    out_rows: list[dict[str, Any]] = []
    from tqdm import tqdm

    for mid in tqdm(sorted(paths), desc="compared with DFT", unit="material"):
        doc = docs.get(mid)
        if doc is None or doc.get("failed"):
            out_rows.append({"material_id": mid, "formula": (doc or {}).get("formula"),
                             "error": "; ".join((doc or {}).get("errors") or ["not screened"])})
            continue
        try:
            out_rows.append(compare(doc, results, paths[mid]))
        except Exception as exc:  # noqa: BLE001 - one material's comparison failing is reported, not fatal
            out_rows.append({"material_id": mid, "formula": doc.get("formula"),
                             "error": f"comparison: {type(exc).__name__}: {exc}"})
    result = {
        "benchmark": "screen_covered", "command": "python benchmarks/screen_covered.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "model_sha256": sha, "model_campaign": args.campaign, "model_elements": sorted(elements),
        "n_covered": len(rows), "screen_run_s": run_s, "wall_s": time.perf_counter() - t0,
        "trained_compositions": sorted(f for f in trained if f), "summary": summarize(out_rows, trained),
        "materials": out_rows,
        "reference": "DFT (VASP PBEsol, phonondb 2018-04-17; A. Togo, Kyoto University, CC-BY-4.0), no NAC",
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    s = result["summary"]
    print(f"{s['n_compared']} of {len(rows)} compared with DFT: frequency MAE per material mean "
          f"{s['freq_mae_THz_mean_of_materials']} THz, median {s['freq_mae_THz_median']} THz, "
          f"{s['materials_below_0p5_THz']} below 0.5 THz; stability {s['stability_agreement']} "
          f"(DFT stable {s['stable_dft']}, MLIP stable {s['stable_mlip']}); A_vib(300 K) MAE "
          f"{s['A_vib_300_mae_meV']} meV/atom over {s['A_vib_compared']}; screening {run_s:.0f} s; written {out}")
    for key in ("composition_trained", "composition_new", "spread_trusted", "spread_flagged"):
        g = s.get(key)
        if g is None:
            continue
        print(f"  {key}: {g['n_compared']} materials, median MAE {g['freq_mae_THz_median']} THz, stability "
              f"{g['stability_agreement']}, A_vib(300 K) MAE {g['A_vib_300_mae_meV']} meV/atom")
    if s.get("spread_error_spearman") is not None:
        print(f"  committee spread vs frequency MAE: Spearman {s['spread_error_spearman']:.2f} over {s['spread_error_n']}")
    errors = [r for r in out_rows if "error" in r]
    for r in errors:
        print(f"  {r['material_id']}: {r['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
