"""The demo campaign (``phonon-flows demo``, ``make demo``): nine unary and binary crystals built
with pymatgen from their prototypes (no downloads), with two polymorph groups held out (ZnS zinc
blende / wurtzite, SiC 3C / 2H) and CHGNet 0.3.0 -- a pretrained universal potential, NOT DFT --
as the reference.
"""

from __future__ import annotations

from typing import Any

from pymatgen.core import Lattice, Structure

from phonon_flows.flows import TrainingCampaignMaker

DEMO_CAMPAIGN = "demo"
#: held-out materials of the demo: both members of two polymorph groups
DEMO_HOLDOUT = ("ZnS-zincblende", "ZnS-wurtzite", "SiC-3C", "SiC-2H")
#: the demo's supercell window (atoms): smaller than the recipe's 100-200 to fit a laptop's minutes
DEMO_MIN_ATOMS = 40
DEMO_MAX_ATOMS = 100
#: MACE epochs of the demo (the small preset's architecture)
DEMO_EPOCHS = 120


def _zincblende(a: float, cation: str, anion: str) -> Structure:
    return Structure.from_spacegroup("F-43m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.25, 0.25, 0.25]])


def _wurtzite(a: float, c: float, cation: str, anion: str, u: float = 0.375) -> Structure:
    return Structure.from_spacegroup(
        "P6_3mc", Lattice.hexagonal(a, c), [cation, anion], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, u]]
    )


def _rocksalt(a: float, cation: str, anion: str) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _diamond(a: float, element: str) -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(a), [element], [[0, 0, 0]])


def _hcp(a: float, c: float, element: str) -> Structure:
    return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(a, c), [element], [[1 / 3, 2 / 3, 0.25]])


def demo_structures() -> dict[str, Structure]:
    """The demo's nine crystals (primitive cells, experimental-like lattice constants in Å; the
    campaign relaxes them with the reference first).

    Training: Si (diamond), Zn (hcp), MgS and ZnS (rock salt), SiC 4H. Held out: ZnS zinc blende
    and wurtzite, SiC 3C (zinc blende) and 2H (wurtzite): two polymorph groups whose every
    element is in the training materials. (Dense carbon phases -- diamond, rock-salt SiC -- are
    left out: CHGNet's angle graph makes them slow and memory-hungry on a laptop.)
    """
    structures = {
        "Si-diamond": _diamond(5.431, "Si"),
        "Zn-hcp": _hcp(2.665, 4.947, "Zn"),
        "MgS-rocksalt": _rocksalt(5.20, "Mg", "S"),
        "ZnS-rocksalt": _rocksalt(5.06, "Zn", "S"),
        "SiC-4H": Structure.from_spacegroup(
            "P6_3mc", Lattice.hexagonal(3.08, 10.08), ["Si", "Si", "C", "C"],
            [[0, 0, 0], [1 / 3, 2 / 3, 0.25], [0, 0, 0.1875], [1 / 3, 2 / 3, 0.4375]],
        ),
        "ZnS-zincblende": _zincblende(5.41, "Zn", "S"),
        "ZnS-wurtzite": _wurtzite(3.82, 6.26, "Zn", "S"),
        "SiC-3C": _zincblende(4.36, "Si", "C"),
        "SiC-2H": _wurtzite(3.08, 5.05, "Si", "C"),
    }
    return {k: s.get_primitive_structure() for k, s in structures.items()}


def demo_campaign_maker(name: str = DEMO_CAMPAIGN, **overrides: Any) -> TrainingCampaignMaker:
    """The demo's TrainingCampaignMaker: CHGNet reference, 6 perturbed supercells per training
    material, the ``small`` MACE preset trained for :data:`DEMO_EPOCHS` epochs, the demo's
    supercell window; ``overrides`` replace fields."""
    settings: dict[str, Any] = dict(
        name=name,
        engine="chgnet",
        engine_kwargs={"batch_size": 2},  # CHGNet's memory grows with the batch: keep it modest
        n_perturbations=6,
        min_atoms=DEMO_MIN_ATOMS,
        max_atoms=DEMO_MAX_ATOMS,
        relax_kwargs={"fmax": 2e-3, "optimizer": "BFGS", "steps": 500},
        preset="small",
        # the small model, trained longer than the preset's 8 epochs (~1.5 s per epoch on 2 idle cores)
        hyperparameters={"max_num_epochs": DEMO_EPOCHS, "start_swa": DEMO_EPOCHS * 3 // 4},
        holdout=DEMO_HOLDOUT,
    )
    settings.update(overrides)
    return TrainingCampaignMaker(**settings)


# ---------------------------------------------------------------------------------------------
