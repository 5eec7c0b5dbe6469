"""A committee of MACE models: trained side by side on one validation split, saved as one model
file whose forces are the members' mean, and the spread of the members' phonons (THz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from jobflow import run_locally

from _mace_data import emt_structures, fcc_supercell, training_set_dict
from phonon_flows.core import committee as C
from phonon_flows.core import phonondb as pdb
from phonon_flows.core import phonons as ph
from phonon_flows.core.mace_training import MEMBER_DIR, VALID_FILE, final_model_path, read_xyz
from phonon_flows.demo import DFT_DEMO_DIR, spread_split
from phonon_flows.engines.mace import MaceEngine
from phonon_flows.makers.batched_phonons import phonons_for_many
from phonon_flows.makers.phonons import engine_phonons, phonon_settings
from phonon_flows.makers.training import MaceTrainingMaker
from phonon_flows.schemas.training import MaceHyperparameters
from phonon_flows.store import get_store

ZNS = DFT_DEMO_DIR / "materials-id-10695-zns-f-43m-216.tar.lzma"  # phonondb, CC-BY-4.0 (see LICENSE.md there)


def _dft_phonopy():
    imp, _ = pdb.load_phonondb_entry(ZNS, use_born=False)
    return imp.phonon


def test_spread_is_zero_for_equal_members_and_follows_scaled_force_constants():
    """Members with the same forces agree exactly; a member whose forces (so force constants) are
    1.1 times the other's has every frequency sqrt(1.1) times larger, so the spread is
    (sqrt(1.1) - 1) times the mean |frequency| of phonopy's own mesh."""
    phonon = _dft_phonopy()
    forces = [np.asarray(f) for f in phonon.forces]
    assert C.committee_spread(phonon, [forces, forces]) == pytest.approx(0.0, abs=1e-9)

    spread = C.committee_spread(phonon, [forces, [1.1 * f for f in forces]])
    phonon.run_mesh(ph.mesh_from_length(phonon.primitive.cell, C.SPREAD_MESH_LENGTH), is_mesh_symmetry=True,
                    is_gamma_center=True)
    w = phonon.mesh.weights[:, None] * np.ones_like(phonon.mesh.frequencies)
    mean_abs = float(np.sum(w * np.abs(phonon.mesh.frequencies)) / np.sum(w))
    assert mean_abs > 3.0  # THz: ZnS
    assert spread == pytest.approx((np.sqrt(1.1) - 1) * mean_abs, rel=1e-6)
    # the phonopy object keeps its own dataset and force constants
    assert np.allclose(phonon.forces, forces)


def test_spread_of_three_members_is_the_mean_over_pairs():
    a, b, c = np.array([[1.0, 2.0]]), np.array([[1.5, 2.0]]), np.array([[1.0, 3.0]])
    w = np.array([1.0])
    pairs = [0.25, 0.5, 0.75]  # |a-b|, |a-c|, |b-c| averaged over the two bands
    assert C.frequency_spread([a, b, c], w) == pytest.approx(np.mean(pairs))
    with pytest.raises(ValueError):
        C.frequency_spread([a], w)


def test_spread_error_correlation_ranks():
    spread = {"a": 0.1, "b": 0.5, "c": 2.0, "d": None}
    assert C.spread_error_correlation(spread, {"a": 0.2, "b": 0.3, "c": 1.5, "d": 9.0}) == (pytest.approx(1.0), 3)
    assert C.spread_error_correlation(spread, {"a": 1.5, "b": 0.3, "c": 0.2})[0] == pytest.approx(-1.0)
    assert C.spread_error_correlation(spread, {"a": 0.2, "b": 0.3}) == (None, 2)


def test_spread_split_names_trusted_and_flagged():
    docs = {"a": {"committee_spread_THz": 0.2}, "b": {"committee_spread_THz": 0.9}, "c": {"committee_spread_THz": None}}
    assert spread_split(docs, ["a", "b", "c", "d"], threshold=0.5) == (["a"], ["b", "c"])
    assert C.trusted_and_flagged({"b": 0.9, "a": 0.2, "c": None, "e": 0.5}, threshold=0.5) == (["a", "e"], ["b", "c"])


@pytest.fixture(scope="module")
def committee_doc(tmp_path_factory):
    """Two members of the small preset (2 epochs each), trained side by side with one thread each."""
    root = tmp_path_factory.mktemp("committee")
    hp = MaceHyperparameters.preset("small", max_num_epochs=2, start_swa=1, committee=2)
    maker = MaceTrainingMaker(hyperparameters=hp, device="cpu", num_threads=1)
    job = maker.make(training_set_dict(emt_structures(n_per_element=6)))
    out = run_locally(job, store=get_store(store_dir=root / "store"), create_folders=True, root_dir=root / "jobs",
                      ensure_success=True, log=False)
    return out[job.uuid][1].output


def _member_models(doc) -> list[Path]:
    return [final_model_path(Path(doc.work_dir) / MEMBER_DIR.format(i), "mace", stage_two=True) for i in range(2)]


def test_committee_trains_members_on_one_split_and_averages_them(committee_doc):
    doc = committee_doc
    assert doc.committee_seeds == [123, 124]
    assert len(doc.committee_valid_force_rmse) == 2
    assert doc.model_file_name == "mace_committee.model"
    valid = [read_xyz((Path(doc.work_dir) / MEMBER_DIR.format(i) / VALID_FILE).read_text()) for i in range(2)]
    assert len(valid[0]) == doc.n_valid > 0
    assert all(np.allclose(a.positions, b.positions) for a, b in zip(*valid, strict=True))

    committee = MaceEngine(Path(doc.work_dir) / doc.model_file_name)
    members = [MaceEngine(p) for p in _member_models(doc)]
    assert committee.committee_size == 2 and committee.info.settings["committee_size"] == 2
    atoms = fcc_supercell("Cu")
    atoms.rattle(0.03, seed=3)
    got = committee.compute([atoms])[0]
    each = [m.compute([atoms])[0] for m in members]
    assert not np.allclose(each[0].forces, each[1].forces)  # two seeds, two models
    assert np.allclose(got.forces, (each[0].forces + each[1].forces) / 2, atol=1e-10)
    assert np.allclose(got.member_forces, [e.forces for e in each], atol=1e-10)
    assert got.energy == pytest.approx((each[0].energy + each[1].energy) / 2)
    # the ASE calculator (relaxations in screening) is mace's own committee of the same members
    atoms.calc = committee.calculator()
    assert np.allclose(atoms.get_forces(), got.forces, atol=1e-8)


def test_committee_phonons_carry_the_spread_on_both_paths(committee_doc):
    """One material through the phonon job, two through the pipelined batch (phonopy workers):
    each PhononDoc has the spread the members' own force constants give; one model gives none."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from ase.build import bulk

    model = Path(committee_doc.work_dir) / committee_doc.model_file_name
    settings = phonon_settings()
    structures = [AseAtomsAdaptor.get_structure(bulk(el, "fcc", a=a)) for el, a in (("Cu", 3.61), ("Al", 4.05))]
    doc = engine_phonons.original(structures[0], "mace", {"model_path": str(model)}, settings, [[3, 0, 0], [0, 3, 0], [0, 0, 3]],
                                  "Cu-fcc", None, False, None, False, False)
    assert not doc.failed and doc.committee_spread_THz is not None and doc.committee_spread_THz > 0

    # the same number from the members' own force constants
    engine = MaceEngine(model)
    phonon, _, supercells = ph.prepare_displacements(structures[0], [[3, 0, 0], [0, 3, 0], [0, 0, 3]], settings, "Cu", None)
    res = engine.compute(supercells)
    per_member = [[r.member_forces[j] for r in res] for j in range(2)]
    assert doc.committee_spread_THz == pytest.approx(C.committee_spread(phonon, per_member), rel=1e-6)

    docs = phonons_for_many(structures, engine, settings, [None, None], ["Cu-fcc", "Al-fcc"], postprocess_workers=2)
    assert all(not d.failed and d.committee_spread_THz > 0 for d in docs)
    single = MaceEngine(_member_models(committee_doc)[0])
    assert phonons_for_many(structures[:1], single, settings, [None], ["Cu-fcc"])[0].committee_spread_THz is None


def test_committee_refuses_an_energy_phase(tmp_path):
    from phonon_flows.core.mace_training import train_committee
    from phonon_flows.errors import InputError
    from phonon_flows.schemas.training import EnergyPhase

    hp = MaceHyperparameters.preset("small", committee=2, energy_phase=EnergyPhase())
    with pytest.raises(InputError, match="energy_phase"):
        train_committee(emt_structures(n_per_element=2), hp, tmp_path)


@pytest.mark.slow
def test_the_dft_demo_runs_a_committee_and_splits_by_spread(tmp_path, monkeypatch):
    """`run_dft_demo` end to end on a small split of the shipped phonondb entries (2 epochs): the
    model is a committee of two, every held-out material has a spread, the table has the trusted /
    flagged rows and the rank correlation of spread with the error against DFT."""
    from phonon_flows import demo

    monkeypatch.setattr(demo, "DFT_DEMO_TRAIN", ("mp-10695", "mp-10760"))  # zinc-blende ZnS, rock-salt MgSe
    monkeypatch.setattr(demo, "DFT_DEMO_HOLDOUT_KNOWN", ("mp-560588",))  # wurtzite ZnS
    monkeypatch.setattr(demo, "DFT_DEMO_HOLDOUT_UNSEEN", ("mp-1190", "mp-380"))  # ZnSe zinc blende, wurtzite
    result = demo.run_dft_demo(get_store(store_dir=tmp_path / "store"), epochs=2, work_dir=tmp_path / "runs",
                               progress=False)
    assert result.ok, result.run_summary.render()
    held = ["ZnS-mp-560588", "ZnSe-mp-1190", "ZnSe-mp-380"]
    rows = {k: g.material_ids for k, g in result.groups.items() if k in (demo.SPREAD_LOW, demo.SPREAD_HIGH)}
    assert rows and sorted(sum(rows.values(), [])) == sorted(held)
    assert result.spread_correlation_n == 3 and -1 <= result.spread_correlation <= 1
    table = demo.dft_demo_table(result)
    assert "Spearman rank correlation" in table and "committee spread" in table
