"""Build ONE fixed small MACE model deterministically, without training.

The throughput benchmark needs a real MACE network of a realistic small size (the cost of
inference depends on the architecture, not on the values of the weights), identical on every
run and every machine, and no training data or download. This module builds a
``ScaleShiftMACE`` with a fixed seed and saves it with ``torch.save`` as a ``.model`` file that
``mace.calculators.MACECalculator`` (and atomate2's force-field makers, and
``phonon_flows.engines.mace``) load like any trained model.

Architecture (the recipe's layout with fewer channels, see DESIGN.md): 2 interactions,
correlation 3, max_ell 3, hidden irreps ``16x0e + 16x1o``, r_max 5 Å, 8 Bessel functions,
float64. The weights are the seeded initialisation: the phonons are not physical, which does
not matter for throughput and for checking that three ways of running it agree.

Run ``python benchmarks/make_model.py OUT.model`` or call :func:`make_model`.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: elements of the benchmark set (see phonon_throughput.MATERIALS), with room to spare
ELEMENTS = ("N", "O", "Na", "Mg", "Al", "Si", "S", "Cl", "Ti", "Cu", "Zn", "Ga", "Ge", "As", "Sr")

SEED = 20240607
R_MAX = 5.0
HIDDEN_IRREPS = "16x0e + 16x1o"


def build_model(elements=ELEMENTS, seed: int = SEED, r_max: float = R_MAX, hidden_irreps: str = HIDDEN_IRREPS):
    """The seeded, untrained ``ScaleShiftMACE`` (float64) for ``elements``."""
    import mace.calculators  # noqa: F401  (first: it lets e3nn load its constants under torch >= 2.6)
    import numpy as np
    import torch
    from ase.data import atomic_numbers as Z
    from e3nn import o3
    from mace import modules

    numbers = sorted(Z[el] for el in elements)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        # isolated-atom energies of a few eV, as E0s of a PBE training set look like
        atomic_energies = -rng.uniform(1.0, 6.0, size=len(numbers))
        interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        model = modules.ScaleShiftMACE(
            r_max=r_max,
            num_bessel=8,
            num_polynomial_cutoff=5,
            max_ell=3,
            interaction_cls=interaction,
            interaction_cls_first=interaction,
            num_interactions=2,
            num_elements=len(numbers),
            hidden_irreps=o3.Irreps(hidden_irreps),
            MLP_irreps=o3.Irreps("16x0e"),
            gate=torch.nn.functional.silu,
            atomic_energies=atomic_energies,
            avg_num_neighbors=30.0,
            atomic_numbers=numbers,
            correlation=3,
            radial_type="bessel",
            radial_MLP=[32, 32, 32],
            atomic_inter_scale=40.0,
            atomic_inter_shift=0.0,
        )
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    return model


def make_model(path: str | Path, **kwargs) -> Path:
    """Build the model and save it to ``path`` (``torch.save`` of the whole module); returns the path.

    The file is rewritten only when missing, so repeated benchmark runs reuse it.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        model = build_model(**kwargs)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(model, tmp)
        tmp.replace(path)
    return path


def sha256(path: str | Path) -> str:
    """sha256 of the model file, as phonon_flows stores models."""
    from phonon_flows.engines.mace import sha256_file

    return sha256_file(path)


if __name__ == "__main__":
    out = make_model(sys.argv[1] if len(sys.argv) > 1 else "bench_output/bench_mace.model")
    print(out, sha256(out))
