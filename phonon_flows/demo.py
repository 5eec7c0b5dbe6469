"""The demo campaigns (``phonon-flows demo``, ``make demo``).

- On DFT (the default): binary crystals of Togo's phonondb (VASP, PBEsol; shipped in
  ``phonon_flows/data/phonondb/`` with their CC-BY-4.0 attribution). The recipe's stages run on
  them: 6 perturbed supercells per training material (the entry's ``DIM``), labelled with harmonic
  DFT (F = -Φu from the entry's DFT force constants), MACE, phonons, benchmark against DFT. Held
  out: polymorphs whose composition has another polymorph in training (the screening use) and,
  reported apart, compositions the model never saw.
- ``--reference chgnet``: nine crystals built with pymatgen, with CHGNet 0.3.0 -- a pretrained
  universal potential, NOT DFT -- as the reference (two polymorph groups held out).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure

from phonon_flows.core import metrics as M
from phonon_flows.core import phonondb as pdb
from phonon_flows.core.committee import DEFAULT_SPREAD_THRESHOLD_THZ, spread_error_correlation, trusted_and_flagged
from phonon_flows.core.phonons import to_structure
from phonon_flows.core.polymorphs import temperature_key
from phonon_flows.core.structures import local_environments
from phonon_flows.engines import get_engine
from phonon_flows.engines.harmonic import HARMONIC_DFT_LABEL, HARMONIC_DFT_NAME
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.flows import TrainingCampaignMaker
from phonon_flows.makers.benchmark import BenchmarkMaker
from phonon_flows.makers.phonons import engine_phonons
from phonon_flows.runner import run_campaign
from phonon_flows.schemas.common import get_field
from phonon_flows.store import metadata_criteria

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


# =============================================================================================
# the demo on DFT: phonondb
# =============================================================================================
DFT_DEMO_CAMPAIGN = "demo-dft"
#: the phonondb entries the demo ships (a subset of 142 binaries, with their attribution)
DFT_DEMO_DIR = Path(__file__).resolve().parent / "data" / "phonondb"
#: MACE epochs of the DFT demo (stage two, SWA, from 75 % of them): 40 with the 6 Å cutoff take
#: about 10 minutes on one CPU thread (15 s each), and 60 were no better on the held-out polymorphs
#: (benchmarks/results/dft_demo_settings.json)
DFT_DEMO_EPOCHS = 40
#: CPU threads of the demo's training process: this small model on batches of one 64-128-atom
#: supercell does not gain from a second thread (measured on 2 cores with 4.5 Å: 7 s per epoch on one thread,
#: 12 s on two when anything else runs beside it), so the other core stays free
DFT_DEMO_TRAINING_THREADS = 1
#: the DFT demo's MACE: the small preset's channels (8x0e + 8x1o, correlation 2) with the recipe's
#: 6 Å cutoff (over four MACE seeds the preset's 4.5 Å gave 0.45-0.70 THz on the held-out polymorphs,
#: mean 0.60, and 6 Å 0.43-0.62, mean 0.52, in about 2 more minutes), trained in float32 (about twice as fast on CPU; phonons are
#: computed with the weights cast to float64) with batches of 1 structure: 177 optimiser steps per
#: epoch instead of 45, which the 186-structure set needs to converge within the CPU budget
#: (batches of 4 for 15 epochs stalled at 46 meV/Å RMSE)
#: A committee of two such models (seeds 123 and 124, trained side by side, one thread each): their mean
#: force is the model's force, and their disagreement on each material's frequencies
#: (PhononDoc.committee_spread_THz) flags the materials outside the training data without any DFT
DFT_DEMO_HYPERPARAMETERS = {"batch_size": 1, "valid_fraction": 0.05, "default_dtype": "float32", "r_max": 6.0,
                            "committee": 2}

#: training materials (mp ids): one polymorph of each held-out composition first, then others. Every
#: local environment of a held-out polymorph (element and coordination number) occurs in training
#: (tests/test_dft_demo.py checks it): the screening use, a new structure of a known chemistry
DFT_DEMO_TRAIN = (
    "mp-10695", "mp-1986", "mp-830", "mp-1700", "mp-2469", "mp-20351", "mp-1550", "mp-2172",  # zinc blendes
    "mp-1315", "mp-10760", "mp-22865", "mp-8062", "mp-23259", "mp-23231",  # MgS MgSe rock salt, CsCl (CsCl type), SiC, LiBr, AgBr
    "mp-149", "mp-1479", "mp-422", "mp-2624", "mp-22914",  # Si, BP, BeS, AlSb, CuCl
    "mp-1265", "mp-2605", "mp-22862", "mp-23193", "mp-1138", "mp-22906",  # MgO CaO NaCl KCl LiF, CsBr (CsCl type)
    # the held-out polymorphs' coordinations: tetrahedral Mg, Ag, Li, Br, Se; octahedral Cs
    "mp-13032", "mp-22925", "mp-570935", "mp-22913", "mp-1541", "mp-571222",  # zb MgS, zb AgI, wz LiI, zb CuBr, zb BeSe, rs CsBr
)
#: held out, composition seen in training (another polymorph of it is a training material)
DFT_DEMO_HOLDOUT_KNOWN = (
    "mp-560588", "mp-2133", "mp-804", "mp-661", "mp-672", "mp-966800", "mp-8880", "mp-8881",  # wurtzites
    "mp-13031", "mp-573697", "mp-7140", "mp-976280", "mp-866291",  # MgSe zb, CsCl rock salt, SiC, LiBr wz, AgBr zb
)
#: held out, composition never seen in training (every element is): the transfer gap
DFT_DEMO_HOLDOUT_UNSEEN = ("mp-1190", "mp-380", "mp-2691", "mp-1070", "mp-1415", "mp-22916")


@dataclass
class PhonondbMaterial:
    """A phonondb entry as a campaign material: its unit cell and supercell matrix (DIM)."""

    material_id: str
    mp_id: str | None
    formula: str
    spacegroup: str | None
    path: str
    structure: Structure
    supercell_matrix: list[list[int]]
    n_displacements: int


def phonondb_materials(paths: Sequence[str | Path]) -> tuple[dict[str, PhonondbMaterial], list[str]]:
    """The materials of phonondb entries, keyed ``<formula>-<mp id>`` (e.g. ``ZnS-mp-560588``), and
    one line per entry that could not be read (named)."""
    out: dict[str, PhonondbMaterial] = {}
    bad: list[str] = []
    for path in paths:
        try:
            e = pdb.read_phonondb_entry(path)
        except PhononFlowsError as exc:
            bad.append(str(exc))
            continue
        name = pdb.entry_name(path)
        sg = name.rsplit("-", 1)[-1] if name.rsplit("-", 1)[-1].isdigit() else None
        mid = f"{e.formula}-{e.mp_id or name}"
        out[mid] = PhonondbMaterial(
            material_id=mid, mp_id=e.mp_id, formula=e.formula, spacegroup=sg, path=str(Path(path).resolve()),
            structure=to_structure(e.unitcell), supercell_matrix=e.supercell_matrix.tolist(),
            n_displacements=len(e.force_sets["first_atoms"]),
        )
    return out, bad


def demo_dft_materials(folder: str | Path = DFT_DEMO_DIR) -> dict[str, PhonondbMaterial]:
    """The DFT demo's materials (training + held out), from the shipped entries."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"the demo's phonondb entries are missing: {folder}")
    wanted = set(DFT_DEMO_TRAIN + DFT_DEMO_HOLDOUT_KNOWN + DFT_DEMO_HOLDOUT_UNSEEN)
    paths = [p for p in pdb.list_phonondb_entries(folder) if pdb.mp_id_of(pdb.entry_name(p)) in wanted]
    materials, bad = phonondb_materials(paths)
    if bad:
        raise InputError("unreadable demo entries: " + "; ".join(bad))
    found = {m.mp_id for m in materials.values()}
    if wanted - found:
        raise InputError(f"demo entries missing in {folder}: {', '.join(sorted(wanted - found))}")
    return materials


def ids_of(materials: Mapping[str, PhonondbMaterial], mp_ids: Sequence[str]) -> list[str]:
    """Material ids of the given mp ids (in that order)."""
    by_mp = {m.mp_id: mid for mid, m in materials.items()}
    return [by_mp[i] for i in mp_ids if i in by_mp]


def phonondb_campaign_maker(
    materials: Mapping[str, PhonondbMaterial],
    holdout: Sequence[str],
    name: str = DFT_DEMO_CAMPAIGN,
    epochs: int = DFT_DEMO_EPOCHS,
    hyperparameters: Mapping[str, Any] | None = None,
    dft_training: str = "perturbed",
    enthalpies: Mapping[str, float] | None = None,
    n_perturbations: int = 6,
    **overrides: Any,
) -> TrainingCampaignMaker:
    """A TrainingCampaignMaker on phonondb materials: harmonic DFT (PBEsol, phonondb) labels, no
    relaxation (the structures are DFT-relaxed), every supercell the entry's ``DIM``, the small
    MACE of the demo for ``epochs``; ``dft_training``: perturbed, finite-displacement or both."""
    hp = {**DFT_DEMO_HYPERPARAMETERS, "max_num_epochs": epochs, "start_swa": max(1, int(0.75 * epochs)),
          **dict(hyperparameters or {})}
    settings: dict[str, Any] = dict(
        name=name,
        engine=HARMONIC_DFT_NAME,
        engine_kwargs={"entries": {mid: m.path for mid, m in materials.items()}},
        n_perturbations=n_perturbations,
        min_atoms=1,
        max_atoms=10_000,  # the supercells are the entries' DIM, not a window's choice
        relax=False,
        use_primitive=False,  # DIM is on the entry's unit cell
        preset="small",
        hyperparameters=hp,
        holdout=tuple(holdout),
        supercell_matrices={mid: m.supercell_matrix for mid, m in materials.items()},
        enthalpies=dict(enthalpies or {}),
        dft_training=dft_training,
        training_kwargs={"num_threads": DFT_DEMO_TRAINING_THREADS},
    )
    settings.update(overrides)
    return TrainingCampaignMaker(**settings)


def read_enthalpies(path: str | Path | None, materials: Mapping[str, PhonondbMaterial]) -> dict[str, float]:
    """Enthalpies per atom (eV/atom) from a JSON file ``{material id or mp id: value}``; {} without one."""
    if path is None:
        return {}
    import json

    raw = json.loads(Path(path).read_text())
    by_mp = {m.mp_id: mid for mid, m in materials.items()}
    out = {}
    for key, value in raw.items():
        mid = key if key in materials else by_mp.get(key)
        if mid is None:
            raise InputError(f"{path}: {key} is not one of the campaign's materials")
        out[mid] = float(value)
    return out


# ---------------------------------------------------------------------------------------------
# phonons of the training materials, groups, polymorph ΔA_vib
# ---------------------------------------------------------------------------------------------
def campaign_outputs(store, campaign: str, stage: str) -> dict[str, dict]:
    """The latest output of each material of a campaign's stage (band structures loaded)."""
    store.connect()
    docs = list(store.query(metadata_criteria(campaign=campaign, stage=stage), load=True,
                            sort={"completed_at": 1}))
    out = {}
    for d in docs:
        o = d.get("output")
        if isinstance(o, dict) and o.get("material_id"):
            out[o["material_id"]] = o
        elif isinstance(o, dict) and stage == "train":
            out["model"] = o
    return out


def phonons_with(materials: Mapping[str, PhonondbMaterial], ids: Sequence[str], engine: str, engine_kwargs: dict,
                 settings: dict, progress=None) -> dict[str, Any]:
    """PhononDocs of ``ids`` (their DIM supercells) with an engine, here and now (no jobs)."""
    out = {}
    for mid in ids:
        m = materials[mid]
        out[mid] = engine_phonons.original(m.structure, engine, dict(engine_kwargs), settings, m.supercell_matrix,
                                           mid, None, False, None, False, False)
        if progress is not None:
            progress(mid)
    return out


def polymorph_pairs(materials: Mapping[str, PhonondbMaterial], held: Sequence[str],
                    train: Sequence[str]) -> list[tuple[str, str]]:
    """``(held-out polymorph, its partner)``: a training polymorph of the same composition when
    there is one, else another held-out one (each unordered pair once)."""
    pairs = []
    for h in held:
        f = materials[h].formula
        partner = [t for t in train if materials[t].formula == f]
        if partner:
            pairs.append((h, partner[0]))
            continue
        others = [o for o in held if o != h and materials[o].formula == f and (o, h) not in pairs]
        if others:
            pairs.append((h, others[0]))
    return pairs


def a_vib(doc: Any, t: float = 300) -> float | None:
    """A_vib (meV/atom) of a PhononDoc (or its dict) at temperature ``t`` (K), None when missing."""
    th = get_field(doc, "thermal") or {}
    row = th.get(temperature_key(t))
    if row is None:
        return None
    return float(row["A_vib_meV_per_atom"] if isinstance(row, dict) else row.A_vib_meV_per_atom)


def delta_a_vib(pairs: Sequence[tuple[str, str]], mlip: Mapping[str, Any], ref: Mapping[str, Any],
                t: float = 300) -> dict[str, Any]:
    """ΔA_vib(T) = A_vib(a) - A_vib(b) of each polymorph pair, DFT vs MLIP: rows, MAE, R², and how
    often the sign (which polymorph the vibrations favour) agrees."""
    rows = []
    for a, b in pairs:
        vals = [a_vib(d.get(x), t) if d.get(x) is not None else None for d in (ref, mlip) for x in (a, b)]
        if any(v is None for v in vals):
            continue
        ref_d, ml_d = vals[0] - vals[1], vals[2] - vals[3]
        rows.append({"a": a, "b": b, "dA_vib_dft_meV": ref_d, "dA_vib_mlip_meV": ml_d})
    out: dict[str, Any] = {"temperature_K": float(t), "rows": rows, "n": len(rows)}
    if rows:
        r = [x["dA_vib_dft_meV"] for x in rows]
        p = [x["dA_vib_mlip_meV"] for x in rows]
        out["mae_meV"] = M.mae(r, p)
        out["r2"] = M.r2(r, p) if len(rows) > 2 else None  # not with one or two pairs
        out["sign_agreement"] = sum((x > 0) == (y > 0) for x, y in zip(r, p, strict=True))
    return out


@dataclass
class GroupMetrics:
    """Metrics of one group of materials against DFT."""

    name: str
    material_ids: list[str]
    freq_mae_THz: float | None = None
    freq_r2: float | None = None
    #: the median over materials of each material's frequency MAE (THz): not dominated by a few
    #: materials with very high frequencies (molecular crystals), as the pooled MAE can be
    freq_mae_median_THz: float | None = None
    per_material_freq_mae_THz: dict[str, float] = field(default_factory=dict)
    stability_accuracy_percent: float | None = None
    stability_right: int = 0
    a_vib_300_mae_meV: float | None = None
    a_vib_1000_mae_meV: float | None = None
    dA_vib: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def group_metrics(name: str, ids: Sequence[str], mlip: Mapping[str, Any], ref: Mapping[str, Any],
                  pairs: Sequence[tuple[str, str]] = (), enthalpies: Mapping[str, float] | None = None) -> GroupMetrics:
    """Frequency MAE (pooled over dispersions), stability, A_vib MAE and polymorph ΔA_vib of a group."""
    both = [i for i in ids if i in mlip and i in ref]
    g = GroupMetrics(name=name, material_ids=both)
    g.skipped = [f"{i}: no phonons (refused or failed input, see the campaign)" for i in ids if i not in both]
    m_docs = [mlip[i] for i in both]
    r_docs = [ref[i] for i in both]
    if not m_docs:
        return g
    try:
        doc = BenchmarkMaker(write_figures=False).benchmark(m_docs, r_docs, enthalpies=enthalpies)
    except PhononFlowsError as exc:
        g.skipped.append(str(exc))
        return g
    g.skipped += [f"{e.material_id}: {e.reason}" for e in doc.skipped]
    g.skipped += [f"{row.material_id}: {row.thermal_note}" for row in doc.materials if row.thermal_note]
    if doc.frequency:
        g.freq_mae_THz, g.freq_r2 = doc.frequency.mae, doc.frequency.r2
    g.per_material_freq_mae_THz = {row.material_id: row.frequency.mae for row in doc.materials if row.frequency}
    if g.per_material_freq_mae_THz:
        g.freq_mae_median_THz = float(np.median(list(g.per_material_freq_mae_THz.values())))
    if doc.stability:
        g.stability_accuracy_percent = doc.stability.accuracy_percent
        g.stability_right = doc.stability.counts.get("true_stable", 0) + doc.stability.counts.get("true_unstable", 0)
    for t, attr in ((300, "a_vib_300_mae_meV"), (1000, "a_vib_1000_mae_meV")):
        tm = doc.thermal.get(temperature_key(t))
        if tm is not None and tm.A_vib is not None:
            setattr(g, attr, tm.A_vib.mae)
    g.dA_vib = delta_a_vib(pairs, mlip, ref) if pairs else {}
    return g


@dataclass
class DftDemoResult:
    """What the DFT demo measured."""

    campaign: str
    groups: dict[str, GroupMetrics]
    transitions: str
    wall_s: float
    n_train: int
    model_sha256: str | None
    ok: bool
    run_summary: Any = None
    #: Spearman's rank correlation of the committee spread with the frequency MAE against DFT over
    #: the held-out materials, and their number (None without a committee)
    spread_correlation: float | None = None
    spread_correlation_n: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "groups": {k: v.as_dict() for k, v in self.groups.items()},
                "transitions": self.transitions, "wall_s": self.wall_s, "n_train": self.n_train,
                "model_sha256": self.model_sha256, "spread_correlation": self.spread_correlation,
                "spread_correlation_n": self.spread_correlation_n}


def run_dft_demo(
    store,
    name: str = DFT_DEMO_CAMPAIGN,
    epochs: int = DFT_DEMO_EPOCHS,
    folder: str | Path = DFT_DEMO_DIR,
    enthalpies_file: str | Path | None = None,
    dft_training: str = "perturbed",
    resume: bool = True,
    work_dir: str | Path | None = None,
    progress: bool = True,
    console: Any = None,
    hyperparameters: Mapping[str, Any] | None = None,
    training_threads: int = DFT_DEMO_TRAINING_THREADS,
) -> DftDemoResult:
    """Run the campaign on the shipped phonondb materials, then measure each group against DFT:
    training materials, held-out polymorphs of trained compositions, unseen compositions.
    ``hyperparameters`` override the demo's MACE settings (e.g. ``{"hidden_irreps": "16x0e +
    16x1o"}``), ``training_threads`` the training process's CPU threads."""
    t0 = time.perf_counter()
    materials = demo_dft_materials(folder)
    train = ids_of(materials, DFT_DEMO_TRAIN)
    known = ids_of(materials, DFT_DEMO_HOLDOUT_KNOWN)
    unseen = ids_of(materials, DFT_DEMO_HOLDOUT_UNSEEN)
    enthalpies = read_enthalpies(enthalpies_file, materials)
    maker = phonondb_campaign_maker(materials, known + unseen, name=name, epochs=epochs, enthalpies=enthalpies,
                                    dft_training=dft_training, hyperparameters=hyperparameters,
                                    training_kwargs={"num_threads": training_threads})
    flow = maker.make({mid: m.structure for mid, m in materials.items()})
    summary = run_campaign(flow, store, progress=progress, resume=resume, work_dir=work_dir, console=console)
    ref = campaign_outputs(store, name, "phonon-reference")
    mlip = campaign_outputs(store, name, "phonon-mlip")
    model = campaign_outputs(store, name, "train").get("model") or {}
    sha = model.get("model_sha256")
    if sha:  # the training materials' phonons with the model and with harmonic DFT, here
        settings = maker.base_phonon_maker().settings()
        if console is not None:
            console.print(f"phonons of the {len(train)} training materials (MACE and {HARMONIC_DFT_LABEL}) ...")
        mlip.update(phonons_with(materials, train, "mace", {"model_sha256": sha, "store": store, "device": "auto"},
                                 settings))
        ref.update(phonons_with(materials, train, HARMONIC_DFT_NAME, maker.engine_kwargs, settings))
    groups = {
        "training materials": group_metrics("training materials", train, mlip, ref),
        "held out, composition in training": group_metrics(
            "held out, composition in training", known, mlip, ref, polymorph_pairs(materials, known, train), enthalpies),
        "held out, unseen composition": group_metrics(
            "held out, unseen composition", unseen, mlip, ref, polymorph_pairs(materials, unseen, train), enthalpies),
    }
    # the held-out polymorphs of trained compositions, split by whether each of their bond environments
    # (element, coordination, neighbours' elements) occurs in a training material
    seen, new = bond_environment_split(materials, known, train)
    subgroups = {label: group_metrics(label, ids, mlip, ref, polymorph_pairs(materials, ids, train), enthalpies)
                 for label, ids in ((KNOWN_BONDS_SEEN, seen), (KNOWN_BONDS_NEW, new)) if ids}
    # all held-out materials split by the committee's spread (no DFT needed to draw this line)
    low, high = spread_split(mlip, known + unseen)
    subgroups |= {label: group_metrics(label, ids, mlip, ref, polymorph_pairs(materials, ids, train), enthalpies)
                  for label, ids in ((SPREAD_LOW, low), (SPREAD_HIGH, high)) if ids}
    order = ["training materials", "held out, composition in training", KNOWN_BONDS_SEEN, KNOWN_BONDS_NEW,
             "held out, unseen composition", SPREAD_LOW, SPREAD_HIGH]
    groups = {k: (groups | subgroups)[k] for k in order if k in groups | subgroups}
    if enthalpies:
        transitions = f"enthalpies of {len(enthalpies)} materials from {enthalpies_file}: see the benchmark's polymorph table"
    else:
        transitions = ("polymorph transitions (ΔA = ΔH + ΔA_vib) unavailable: phonondb has no total energies; "
                       "give DFT enthalpies with --enthalpies FILE (JSON: mp id -> eV/atom)")
    errors = {**groups["held out, composition in training"].per_material_freq_mae_THz,
              **groups["held out, unseen composition"].per_material_freq_mae_THz}
    rho, n_rho = spread_error_correlation({i: get_field(mlip[i], "committee_spread_THz") for i in errors if i in mlip},
                                          errors)
    return DftDemoResult(campaign=name, groups=groups, transitions=transitions, wall_s=time.perf_counter() - t0,
                         n_train=len(train), model_sha256=sha, ok=summary.ok, run_summary=summary,
                         spread_correlation=rho, spread_correlation_n=n_rho)


#: sub-groups of "held out, composition in training" (rows of the demo's table)
KNOWN_BONDS_SEEN = "held out, composition in training: every bond environment trained"
KNOWN_BONDS_NEW = "held out, composition in training: a bond in a coordination never trained"


#: rows of the demo's table: every held-out material (both groups), split by the committee's spread
SPREAD_LOW = f"held out, committee spread ≤ {DEFAULT_SPREAD_THRESHOLD_THZ} THz (trusted)"
SPREAD_HIGH = f"held out, committee spread > {DEFAULT_SPREAD_THRESHOLD_THZ} THz (flagged for DFT)"


def spread_split(docs: Mapping[str, Any], ids: Sequence[str],
                 threshold: float = DEFAULT_SPREAD_THRESHOLD_THZ) -> tuple[list[str], list[str]]:
    """``(trusted, flagged)``: the materials of ``ids`` whose PhononDoc's committee spread is at most
    ``threshold`` (THz), and those above it or without a spread."""
    return trusted_and_flagged({i: get_field(docs[i], "committee_spread_THz") for i in ids if i in docs}, threshold)


def bond_environment_split(materials: Mapping[str, PhonondbMaterial], held: Sequence[str],
                           train: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(seen, new)``: the held-out materials whose every bond environment (element, coordination
    number, neighbours' elements; :func:`~phonon_flows.core.structures.local_environments`) occurs
    in a training material, and the others (e.g. zinc-blende AgBr when only rock-salt AgBr and
    zinc-blende AgI are trained: tetrahedral Ag-Br is new)."""
    trained = set().union(*(local_environments(materials[m].structure, neighbours=True) for m in train))
    seen = [m for m in held if local_environments(materials[m].structure, neighbours=True) <= trained]
    return seen, [m for m in held if m not in seen]


def dft_demo_table(result: DftDemoResult) -> str:
    """The DFT demo's figures as a Markdown table (one row per group) plus the ΔA_vib lines."""
    lines = [f"Reference: DFT (PBEsol, phonondb): {HARMONIC_DFT_LABEL} labels and phonons; "
             f"{pdb.PHONONDB_ATTRIBUTION}",
             "",
             "| group | materials | freq MAE (THz) | freq R² | stability right | A_vib 300 K MAE (meV/atom) "
             "| A_vib 1000 K MAE (meV/atom) | ΔA_vib 300 K MAE (meV/atom) | ΔA_vib R² | ΔA_vib sign right |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def f(x, fmt=".3f"):
        return "n/a" if x is None else format(x, fmt)

    for g in result.groups.values():
        n = len(g.material_ids)
        d = g.dA_vib or {}
        stab = f"{g.stability_right}/{n} ({f(g.stability_accuracy_percent, '.0f')} %)"
        sign = f"{d.get('sign_agreement')}/{d.get('n')}" if d.get("n") else "n/a"
        lines.append(f"| {g.name} | {n} | {f(g.freq_mae_THz)} | {f(g.freq_r2)} | {stab} | {f(g.a_vib_300_mae_meV, '.2f')} "
                     f"| {f(g.a_vib_1000_mae_meV, '.2f')} | {f(d.get('mae_meV'), '.2f')} | {f(d.get('r2'), '.2f')} "
                     f"| {sign} |")
    lines += ["", result.transitions]
    if result.spread_correlation is not None:
        lines.append(f"committee spread against the frequency MAE vs DFT over the {result.spread_correlation_n} held-out "
                     f"materials: Spearman rank correlation {result.spread_correlation:.2f} (a spread above "
                     f"{DEFAULT_SPREAD_THRESHOLD_THZ} THz flags a material for DFT)")
    for g in result.groups.values():
        for s in g.skipped:
            lines.append(f"skipped in {g.name}: {s}")
    return "\n".join(lines)
