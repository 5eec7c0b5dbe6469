"""The DFT demo's set (shipped phonondb entries) and its group measures."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from phonon_flows.core.structures import bonded_pairs, local_environments

from phonon_flows.demo import (
    DFT_DEMO_DIR,
    DFT_DEMO_HOLDOUT_KNOWN,
    DFT_DEMO_HOLDOUT_UNSEEN,
    DFT_DEMO_TRAIN,
    delta_a_vib,
    demo_dft_materials,
    ids_of,
    phonondb_campaign_maker,
    polymorph_pairs,
)


@pytest.fixture(scope="module")
def materials():
    return demo_dft_materials()


def test_the_split_shows_what_the_recipe_does(materials):
    assert (DFT_DEMO_DIR / "LICENSE.md").read_text().count("CC-BY-4.0") >= 1
    train = ids_of(materials, DFT_DEMO_TRAIN)
    known = ids_of(materials, DFT_DEMO_HOLDOUT_KNOWN)
    unseen = ids_of(materials, DFT_DEMO_HOLDOUT_UNSEEN)
    assert len(materials) == len(train) + len(known) + len(unseen) == 50
    train_formulas = {materials[m].formula for m in train}
    train_elements = {el.symbol for m in train for el in materials[m].structure.composition.elements}
    for m in known:  # a new structure of a trained composition
        assert materials[m].formula in train_formulas, m
    for m in unseen:  # a composition never seen, of elements the model knows
        assert materials[m].formula not in train_formulas, m
    for m in known + unseen:
        assert {el.symbol for el in materials[m].structure.composition.elements} <= train_elements, m
    # and every local environment (element, coordination number) of a held-out polymorph is trained
    trained_envs = set().union(*(local_environments(materials[m].structure) for m in train))
    for m in known:
        assert local_environments(materials[m].structure) <= trained_envs, m
    pairs = polymorph_pairs(materials, known, train)
    assert len(pairs) == len(known) and all(materials[a].formula == materials[b].formula for a, b in pairs)
    unseen_pairs = polymorph_pairs(materials, unseen, train)
    assert sorted(materials[a].formula for a, _ in unseen_pairs) == ["CdSe", "ZnSe"]


def test_campaign_maker_uses_dim_and_harmonic_dft(materials):
    maker = phonondb_campaign_maker(materials, ids_of(materials, DFT_DEMO_HOLDOUT_KNOWN))
    assert maker.engine_name == "harmonic-dft" and maker.relax_maker() is None and maker.use_primitive is False
    zns = next(m for m in materials.values() if m.mp_id == "mp-560588")
    assert maker.supercell_matrices[zns.material_id] == [[4, 0, 0], [0, 4, 0], [0, 0, 2]]


def test_delta_a_vib_between_polymorphs():
    def doc(a):
        return {"thermal": {"T300": {"A_vib_meV_per_atom": a}}}

    ref = {"a": doc(-10.0), "b": doc(-12.0), "c": doc(5.0), "d": doc(4.0)}
    mlip = {"a": doc(-9.0), "b": doc(-12.5), "c": doc(6.0), "d": doc(7.0)}
    out = delta_a_vib([("a", "b"), ("c", "d"), ("a", "missing")], mlip, ref)
    assert out["n"] == 2
    assert [r["dA_vib_dft_meV"] for r in out["rows"]] == [2.0, 1.0]
    assert [r["dA_vib_mlip_meV"] for r in out["rows"]] == [3.5, -1.0]
    assert out["mae_meV"] == pytest.approx((1.5 + 2.0) / 2)
    assert out["sign_agreement"] == 1


def test_group_metrics_on_real_documents():
    """A_vib and ΔA_vib are read from real PhononDocs (the keys the documents use), and a model
    equal to DFT scores zero."""
    from pathlib import Path

    from phonon_flows.demo import group_metrics
    from phonon_flows.makers.phonons import phonon_settings, phonondb_phonon_doc

    data = Path(__file__).resolve().parent / "data" / "phonondb"
    settings = phonon_settings(temperatures=[300, 1000])
    docs = {mid: phonondb_phonon_doc(data / name, settings, material_id=mid, use_born=False)
            for mid, name in (("zb", "materials-id-10695-zns-f-43m-216.tar.lzma"),
                              ("wz", "materials-id-560588-zns-p6-3mc-186.tar.lzma"))}
    g = group_metrics("same", ["zb", "wz"], docs, docs, pairs=[("wz", "zb")])
    assert g.freq_mae_THz == pytest.approx(0, abs=1e-9) and g.stability_right == 2
    assert g.freq_mae_median_THz == pytest.approx(0, abs=1e-9) and set(g.per_material_freq_mae_THz) == {"zb", "wz"}
    assert g.a_vib_300_mae_meV == pytest.approx(0, abs=1e-9) and g.a_vib_1000_mae_meV == pytest.approx(0, abs=1e-9)
    assert g.dA_vib["n"] == 1 and g.dA_vib["mae_meV"] == pytest.approx(0, abs=1e-9)
    # the DFT polytypes differ by less than 1 meV/atom in A_vib(300 K)
    assert abs(g.dA_vib["rows"][0]["dA_vib_dft_meV"]) < 1.0


def test_local_environments():
    zb = Structure.from_spacegroup("F-43m", Lattice.cubic(5.41), ["Zn", "S"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    rs = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert local_environments(zb) == {("Zn", 4), ("S", 4)}
    assert local_environments(rs) == {("Na", 6), ("Cl", 6)}
    assert local_environments(cscl) == {("Cs", 8), ("Cl", 8)}


def test_bonded_pairs():
    """The first shell's element pairs: Zn-S in zinc blende; in a zinc blende with one of its four S made Se,
    Zn-S and Zn-Se but no Zn-Zn (second shell) and no S-Se; Cs-Cl (not Cs-Cs at 1.15 x 3.57 Å) in CsCl."""
    zb = Structure.from_spacegroup("F-43m", Lattice.cubic(5.41), ["Zn", "S"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    assert bonded_pairs(zb) == {("S", "Zn")}
    mixed = zb.copy()
    mixed.replace(next(i for i, site in enumerate(mixed) if site.specie.symbol == "S"), "Se")
    assert bonded_pairs(mixed) == {("S", "Zn"), ("Se", "Zn")}
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert bonded_pairs(cscl) == {("Cl", "Cs")}


def test_demo_training_settings(materials):
    """The demo trains the small MACE with a 6 Å cutoff in float32, batches of one, on one CPU thread, for DFT_DEMO_EPOCHS."""
    from phonon_flows.demo import DFT_DEMO_EPOCHS, DFT_DEMO_TRAINING_THREADS

    training = phonondb_campaign_maker(materials, ids_of(materials, DFT_DEMO_HOLDOUT_KNOWN)).mace_training_maker()
    hp = training.hyperparameters
    assert training.num_threads == DFT_DEMO_TRAINING_THREADS == 1
    assert hp.max_num_epochs == DFT_DEMO_EPOCHS and hp.start_swa == int(0.75 * DFT_DEMO_EPOCHS)
    assert hp.default_dtype == "float32" and hp.batch_size == 1 and hp.hidden_irreps.replace(" ", "") == "8x0e+8x1o"
    assert hp.r_max == 6.0  # the recipe's cutoff, not the small preset's 4.5 Å
    assert hp.committee == 2  # two seeds side by side (one thread each): the spread flags what to check


def test_bond_environment_split(materials):
    """Polytypes of a trained polymorph (wurtzite beside zinc blende) have every bond environment
    trained; zinc-blende AgBr beside rock-salt AgBr and zinc-blende AgI has a new one (tetrahedral Ag-Br)."""
    from phonon_flows.demo import bond_environment_split

    train = ids_of(materials, DFT_DEMO_TRAIN)
    known = ids_of(materials, DFT_DEMO_HOLDOUT_KNOWN)
    seen, new = bond_environment_split(materials, known, train)
    assert sorted(seen + new) == sorted(known)
    by_mp = {materials[m].mp_id: m for m in known}
    assert by_mp["mp-560588"] in seen and by_mp["mp-7140"] in seen  # wurtzite ZnS, SiC 2H
    assert {by_mp[x] for x in ("mp-866291", "mp-976280", "mp-13031", "mp-573697")} == set(new)


def test_demo_help_states_the_split_it_runs():
    from phonon_flows.cli import demo
    from phonon_flows.demo import DFT_DEMO_HOLDOUT_KNOWN, DFT_DEMO_HOLDOUT_UNSEEN

    text = " ".join(demo.__doc__.split())
    n = len(DFT_DEMO_TRAIN) + len(DFT_DEMO_HOLDOUT_KNOWN) + len(DFT_DEMO_HOLDOUT_UNSEEN)
    assert f"{n} binaries" in text and f"{len(DFT_DEMO_TRAIN)} train" in text
    assert f"{len(DFT_DEMO_HOLDOUT_KNOWN)} polymorphs of trained compositions" in text
    assert f"{len(DFT_DEMO_HOLDOUT_UNSEEN)} materials of unseen compositions" in text
