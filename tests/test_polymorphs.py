"""Polymorph analysis on a constructed set whose answer is worked out by hand (meV/atom)."""

from __future__ import annotations

import random

import pytest

from phonon_flows.core.polymorphs import (
    Polymorph,
    analyze_polymorphs,
    ground_state,
    temperature_key,
    temperature_label,
    temperature_value,
)
from phonon_flows.errors import InputError


def P(mid, comp, h_eV, ref, mlip):
    return Polymorph(mid, comp, h_eV, {k: v for k, v in ref.items()}, {k: v for k, v in mlip.items()})


SET = [
    # GaN: ΔH = 2; ΔA_vib -1 (ref) / -0.5 (MLIP) at 300 K, -2 / -1 at 1000 K -> transition everywhere
    P("gan-1", "GaN", -4.000, {"300": 3, "1000": 10}, {"300": 3, "1000": 10}),
    P("gan-2", "GaN", -3.998, {"300": 2, "1000": 8}, {"300": 2.5, "1000": 9}),
    # TiO2: ΔH 5 and 20.  300 K ref: ΔA 3 (candidate) and 20-10 = 10 (NOT < 10); MLIP: 15 and 11 -> none.
    # 1000 K ref: ΔA 0 and -10 -> ti-3; MLIP: -1 and -8 -> ti-3.
    P("ti-1", "TiO2", -9.000, {"300": 10, "1000": 50}, {"300": 10, "1000": 50}),
    P("ti-2", "TiO2", -8.995, {"300": 8, "1000": 45}, {"300": 20, "1000": 44}),
    P("ti-3", "TiO2", -8.980, {"300": 0, "1000": 20}, {"300": 1, "1000": 22}),
    # SiO2: a single polymorph
    P("si-1", "SiO2", -7.0, {"300": 1, "1000": 2}, {"300": 1, "1000": 2}),
    # ZnS: zn-1 and zn-2 tie in H -> ground state zn-1 (id first). 300 K ref: zn-2 ΔA 0, zn-3 ΔA 10-10 = 0
    # (tie -> zn-2); MLIP: zn-2 1, zn-3 -1 -> zn-3 (disagree). 1000 K: zn-2 0, zn-3 10 (not < 10) -> zn-2.
    P("zn-2", "ZnS", -5.00, {"300": 5, "1000": 20}, {"300": 6, "1000": 20}),
    P("zn-1", "ZnS", -5.00, {"300": 5, "1000": 20}, {"300": 5, "1000": 20}),
    P("zn-3", "ZnS", -4.99, {"300": -5, "1000": 20}, {"300": -6, "1000": 20}),
    # NaCl: a candidate only at 1000 K (ΔH 30; ΔA_vib -10 at 300 K, -40 at 1000 K; MLIP -9, -38)
    P("na-1", "NaCl", -3.00, {"300": 10, "1000": 40}, {"300": 10, "1000": 40}),
    P("na-2", "NaCl", -2.97, {"300": 0, "1000": 0}, {"300": 1, "1000": 2}),
]


def ids(transitions):
    return {t.composition: t.material_id for t in transitions}


def test_known_answer_300K():
    res = analyze_polymorphs(SET, [300, 1000])["300"]
    assert ids(res.transitions_reference) == {"GaN": "gan-2", "TiO2": "ti-2", "ZnS": "zn-2"}
    assert ids(res.transitions_mlip) == {"GaN": "gan-2", "ZnS": "zn-3"}
    assert res.common == ["GaN"] and res.n_common == 1 and res.n_reference == 3
    assert res.only_reference == ["TiO2"] and res.disagree == ["ZnS"] and res.only_mlip == []
    assert res.single_polymorph == ["SiO2"]
    assert {r.ground_state_id for r in res.rows if r.composition == "ZnS"} == {"zn-1"}
    row = next(r for r in res.rows if r.material_id == "ti-3")
    assert row.dH_meV == pytest.approx(20.0) and row.dA_reference_meV == pytest.approx(10.0)
    assert not row.candidate_reference  # ΔA == offset is not a candidate
    # ΔA_vib errors (MLIP - ref): gan-2 0.5, na-2 1, ti-2 12, ti-3 1, zn-2 1, zn-3 1
    assert res.dA_vib_metrics.n == 6
    assert res.dA_vib_metrics.mae == pytest.approx(16.5 / 6)


def test_known_answer_1000K_candidate_only_at_high_T():
    res = analyze_polymorphs(SET, ["1000"])["1000"]
    assert ids(res.transitions_reference) == {"GaN": "gan-2", "NaCl": "na-2", "TiO2": "ti-3", "ZnS": "zn-2"}
    assert ids(res.transitions_mlip) == ids(res.transitions_reference)
    assert res.n_common == 4 and res.disagree == []
    na = next(t for t in res.transitions_reference if t.composition == "NaCl")
    assert na.ground_state_id == "na-1" and na.dA_meV == pytest.approx(-10.0)
    res300 = analyze_polymorphs(SET, [300])["300"]
    assert "NaCl" not in ids(res300.transitions_reference) | ids(res300.transitions_mlip)


def test_order_independent_and_offset():
    shuffled = SET[:]
    random.Random(1).shuffle(shuffled)
    a = analyze_polymorphs(SET, [300])["300"].as_dict()
    b = analyze_polymorphs(shuffled, [300])["300"].as_dict()
    assert a == b
    # a larger offset admits ti-3 at 300 K for the reference (ΔA = 10) but ti-2 (ΔA = 3) stays lowest
    big = analyze_polymorphs(SET, [300], offset_meV=10.5)["300"]
    assert next(r for r in big.rows if r.material_id == "ti-3").candidate_reference
    assert ids(big.transitions_reference)["TiO2"] == "ti-2"


def test_ground_state_tie_and_missing_temperature():
    assert ground_state([SET[7], SET[6]]).material_id == "zn-1"
    partial = SET[:2] + [P("gan-3", "GaN", -3.999, {"300": 0}, {"300": 0})]
    res = analyze_polymorphs(partial, [1000])["1000"]
    assert res.missing == ["gan-3"]
    assert ids(res.transitions_reference) == {"GaN": "gan-2"}


def test_duplicates_and_keys():
    with pytest.raises(InputError, match="gan-1"):
        analyze_polymorphs(SET + [SET[0]], [300])
    # keys start with a letter and hold no dot: plain MongoDB paths (output.thermal.T300...)
    assert temperature_key(300) == "T300" and temperature_key(300.0) == "T300" and temperature_key("1000") == "T1000"
    assert temperature_key("T300") == "T300" and temperature_key(298.15) == "T298_15"
    assert temperature_value("T298_15") == 298.15 and temperature_label("T1000") == "1000"
    with pytest.raises(ValueError):
        temperature_key("hot")
