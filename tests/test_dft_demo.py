"""The DFT demo's set (shipped phonondb entries) and its group measures."""

from __future__ import annotations

import pytest

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
    assert len(materials) == len(train) + len(known) + len(unseen) == 45
    train_formulas = {materials[m].formula for m in train}
    train_elements = {el.symbol for m in train for el in materials[m].structure.composition.elements}
    for m in known:  # a new structure of a trained composition
        assert materials[m].formula in train_formulas, m
    for m in unseen:  # a composition never seen, of elements the model knows
        assert materials[m].formula not in train_formulas, m
    for m in known + unseen:
        assert {el.symbol for el in materials[m].structure.composition.elements} <= train_elements, m
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
        return {"thermal": {"300": {"A_vib_meV_per_atom": a}}}

    ref = {"a": doc(-10.0), "b": doc(-12.0), "c": doc(5.0), "d": doc(4.0)}
    mlip = {"a": doc(-9.0), "b": doc(-12.5), "c": doc(6.0), "d": doc(7.0)}
    out = delta_a_vib([("a", "b"), ("c", "d"), ("a", "missing")], mlip, ref)
    assert out["n"] == 2
    assert [r["dA_vib_dft_meV"] for r in out["rows"]] == [2.0, 1.0]
    assert [r["dA_vib_mlip_meV"] for r in out["rows"]] == [3.5, -1.0]
    assert out["mae_meV"] == pytest.approx((1.5 + 2.0) / 2)
    assert out["sign_agreement"] == 1
