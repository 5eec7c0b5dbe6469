"""What the non-analytical correction (NAC) alone does to a phonon benchmark.

For NaCl and MgO (phonopy's examples, real VASP forces and BORN files in ``tests/data``), the same
force constants are analysed twice, with and without NAC, exactly as ``phonon-flows import`` and
``PhononMaker`` do (seekpath band path, l = 75 Å mesh, 300/1000 K). The differences are what a
benchmark that compares an imported DFT reference (NAC applied from BORN) with MLIP phonons
(no NAC) would count as the MLIP's error. ``BenchmarkMaker(nac="none")`` (the default) removes
them: its frequency MAE between the two documents is printed too (0 up to rounding).

Run: ``python benchmarks/nac_like_for_like.py`` (a few seconds; writes
``bench_output/nac_like_for_like.json``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phonon_flows.core import phonons as ph_core  # noqa: E402
from phonon_flows.core.phonopy_io import load_phonopy_folder  # noqa: E402
from phonon_flows.makers.benchmark import BenchmarkMaker  # noqa: E402
from phonon_flows.makers.phonons import import_phonopy_doc, phonon_doc_from_phonopy, phonon_settings  # noqa: E402
from phonon_flows.schemas.common import EngineInfo  # noqa: E402

DATA = ROOT / "tests" / "data" / "dft-phonons"
MATERIALS = ("NaCl", "MgO")


def nac_alone(name: str) -> dict:
    folder = DATA / name
    settings = phonon_settings()
    with_nac = import_phonopy_doc(folder, settings=settings, material_id=name)
    imp = load_phonopy_folder(folder, use_born=False)
    without = phonon_doc_from_phonopy(imp.phonon, ph_core.to_structure(imp.phonon.unitcell),
                                      EngineInfo(name="same-force-constants", kind="mlip"), settings,
                                      material_id=name, fc_method=imp.fc_method)
    fa = np.asarray(with_nac.band_structure.frequencies)
    fb = np.asarray(without.band_structure.frequencies)
    diff = np.abs(fa - fb)
    t = {k: abs(with_nac.thermal[k].A_vib_meV_per_atom - without.thermal[k].A_vib_meV_per_atom)
         for k in ("T300", "T1000")}
    bench = BenchmarkMaker(write_figures=False).benchmark([without], [with_nac])
    return {
        "band_mae_THz": float(diff.mean()),
        "band_max_abs_THz": float(diff.max()),
        "A_vib_abs_diff_meV_per_atom": t,
        "benchmark_nac_none_frequency_mae_THz": bench.frequency.mae,
    }


def main() -> None:
    out = {}
    start = time.perf_counter()
    for name in MATERIALS:
        print(f"{name}: analysing with and without NAC ...", flush=True)
        out[name] = nac_alone(name)
        r = out[name]
        print(f"  NAC alone: band MAE {r['band_mae_THz']:.3f} THz (max {r['band_max_abs_THz']:.2f} THz), "
              f"|ΔA_vib| 300 K {r['A_vib_abs_diff_meV_per_atom']['T300']:.3f} meV/atom; "
              f"BenchmarkMaker(nac='none') frequency MAE {r['benchmark_nac_none_frequency_mae_THz']:.1e} THz")
    out["seconds"] = time.perf_counter() - start
    dest = Path("bench_output")
    dest.mkdir(exist_ok=True)
    (dest / "nac_like_for_like.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {dest / 'nac_like_for_like.json'} ({out['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
