"""Temperature-driven polymorphic phase transitions from vibrational free energies (the paper's
polymorph analysis).

For every reduced composition with two or more polymorphs and every temperature T:

- the *ground state* is the polymorph with the lowest enthalpy per atom H (from DFT, or from the
  reference engine when that stands in for DFT). Ties (within ``tie_tolerance_meV``) go to the
  polymorph whose ``material_id`` sorts first, so the answer does not depend on input order;
- for each other polymorph, in meV/atom: ``ΔH = H - H_gs``, ``ΔA_vib(T) = A_vib(T) - A_vib,gs(T)``,
  ``ΔA(T) = ΔH + ΔA_vib(T)``;
- a polymorph is a *candidate* for a transition when ``ΔA(T) < offset`` (10 meV/atom by default,
  the paper's allowance for DFT error; a ΔA within ``tie_tolerance_meV`` of the offset counts as
  equal to it, so rounding noise does not decide); the ground state itself is never a candidate;
- the *predicted transition* of the composition at T is the candidate with the lowest ΔA (ties:
  ``material_id`` sorting first).

ΔH always comes from the reference enthalpies; ΔA_vib is computed twice, once from the reference's
A_vib and once from the MLIP's, giving two lists of transitions. Their *agreement* is the number of
compositions where both predict a transition to the same polymorph (the paper: 16 of 19 at 300 K),
and the MAE/R² of ΔA_vib (MLIP vs reference) over all non-ground-state polymorphs measures how well
the MLIP reproduces the free-energy differences.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from phonon_flows.core.metrics import RegressionMetrics, regression_metrics
from phonon_flows.errors import InputError

#: candidate threshold on ΔA (meV/atom), the paper's value
DEFAULT_OFFSET_MEV = 10.0
#: enthalpies / free energies closer than this (meV/atom) are ties
DEFAULT_TIE_TOLERANCE_MEV = 1e-6


@dataclass
class Polymorph:
    """One polymorph: reduced composition, reference enthalpy, and A_vib of both sources.

    ``A_vib_reference`` and ``A_vib_mlip`` map a temperature key (e.g. ``"T300"``) to the
    vibrational Helmholtz free energy in meV/atom.
    """

    material_id: str
    composition: str
    enthalpy_per_atom_eV: float
    A_vib_reference: Mapping[str, float]
    A_vib_mlip: Mapping[str, float]


@dataclass
class PolymorphRow:
    """One non-ground-state polymorph at one temperature; energies in meV/atom."""

    material_id: str
    composition: str
    ground_state_id: str
    dH_meV: float
    dA_vib_reference_meV: float
    dA_vib_mlip_meV: float
    dA_reference_meV: float
    dA_mlip_meV: float
    candidate_reference: bool
    candidate_mlip: bool


@dataclass
class Transition:
    """A predicted transition of a composition from its ground state to ``material_id`` at T."""

    composition: str
    ground_state_id: str
    material_id: str
    dA_meV: float


@dataclass
class PolymorphResult:
    """The polymorph analysis at one temperature."""

    temperature: str
    offset_meV: float
    rows: list[PolymorphRow] = field(default_factory=list)
    transitions_reference: list[Transition] = field(default_factory=list)
    transitions_mlip: list[Transition] = field(default_factory=list)
    #: compositions where both sources predict a transition to the same polymorph
    common: list[str] = field(default_factory=list)
    #: compositions with a transition predicted by only one source, or by both but to different polymorphs
    only_reference: list[str] = field(default_factory=list)
    only_mlip: list[str] = field(default_factory=list)
    disagree: list[str] = field(default_factory=list)
    #: ΔA_vib of the MLIP against the reference's, meV/atom (None with no non-ground-state polymorph)
    dA_vib_metrics: RegressionMetrics | None = None
    #: compositions with a single polymorph (nothing to compare)
    single_polymorph: list[str] = field(default_factory=list)
    #: polymorphs left out at this temperature for lack of A_vib
    missing: list[str] = field(default_factory=list)

    @property
    def n_common(self) -> int:
        return len(self.common)

    @property
    def n_reference(self) -> int:
        return len(self.transitions_reference)

    @property
    def n_mlip(self) -> int:
        return len(self.transitions_mlip)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(n_common=self.n_common, n_reference=self.n_reference, n_mlip=self.n_mlip)
        return d


def _pick_lowest(items: Iterable[tuple[float, str]], tol: float) -> tuple[float, str]:
    """Lowest value; among values within ``tol`` of it, the smallest id."""
    items = list(items)
    low = min(v for v, _ in items)
    return min(((v, k) for v, k in items if v - low <= tol), key=lambda t: t[1])


def ground_state(polymorphs: Sequence[Polymorph], tie_tolerance_meV: float = DEFAULT_TIE_TOLERANCE_MEV) -> Polymorph:
    """The polymorph with the lowest enthalpy per atom (ties: smallest material_id)."""
    by_id = {p.material_id: p for p in polymorphs}
    _, mid = _pick_lowest(((1000.0 * p.enthalpy_per_atom_eV, p.material_id) for p in polymorphs), tie_tolerance_meV)
    return by_id[mid]


def group_by_composition(polymorphs: Iterable[Polymorph]) -> dict[str, list[Polymorph]]:
    """Polymorphs grouped by reduced composition, groups and members sorted for determinism."""
    groups: dict[str, list[Polymorph]] = defaultdict(list)
    seen: set[str] = set()
    for p in polymorphs:
        if p.material_id in seen:
            raise InputError("material appears twice in the polymorph analysis", material_id=p.material_id)
        seen.add(p.material_id)
        groups[p.composition].append(p)
    return {c: sorted(groups[c], key=lambda p: p.material_id) for c in sorted(groups)}


def _by_key(values: Mapping) -> dict[str, float]:
    """A temperature-keyed mapping with its keys as :func:`temperature_key` writes them."""
    return {temperature_key(k): v for k, v in values.items()}


def analyze_temperature(
    polymorphs: Sequence[Polymorph],
    temperature: str,
    offset_meV: float = DEFAULT_OFFSET_MEV,
    tie_tolerance_meV: float = DEFAULT_TIE_TOLERANCE_MEV,
) -> PolymorphResult:
    """The polymorph analysis of all compositions at one temperature (see module doc)."""
    temperature = temperature_key(temperature)
    result = PolymorphResult(temperature=temperature, offset_meV=float(offset_meV))
    a_ref = {id(p): _by_key(p.A_vib_reference) for p in polymorphs}
    a_mlip = {id(p): _by_key(p.A_vib_mlip) for p in polymorphs}
    for composition, group in group_by_composition(polymorphs).items():
        have = [p for p in group if temperature in a_ref[id(p)] and temperature in a_mlip[id(p)]]
        result.missing.extend(p.material_id for p in group if p not in have)
        if len(group) < 2:
            result.single_polymorph.append(composition)
            continue
        gs = ground_state(group, tie_tolerance_meV)
        if gs not in have:
            # without the ground state's A_vib nothing of this composition can be compared
            result.missing.extend(p.material_id for p in have)
            continue
        rows = []
        for p in have:
            if p is gs:
                continue
            dh = 1000.0 * (p.enthalpy_per_atom_eV - gs.enthalpy_per_atom_eV)
            dvr = float(a_ref[id(p)][temperature]) - float(a_ref[id(gs)][temperature])
            dvm = float(a_mlip[id(p)][temperature]) - float(a_mlip[id(gs)][temperature])
            rows.append(
                PolymorphRow(
                    material_id=p.material_id,
                    composition=composition,
                    ground_state_id=gs.material_id,
                    dH_meV=dh,
                    dA_vib_reference_meV=dvr,
                    dA_vib_mlip_meV=dvm,
                    dA_reference_meV=dh + dvr,
                    dA_mlip_meV=dh + dvm,
                    candidate_reference=dh + dvr < offset_meV - tie_tolerance_meV,
                    candidate_mlip=dh + dvm < offset_meV - tie_tolerance_meV,
                )
            )
        result.rows.extend(rows)
        t_ref = _transition(rows, "reference", tie_tolerance_meV)
        t_mlip = _transition(rows, "mlip", tie_tolerance_meV)
        if t_ref:
            result.transitions_reference.append(t_ref)
        if t_mlip:
            result.transitions_mlip.append(t_mlip)
        if t_ref and t_mlip:
            (result.common if t_ref.material_id == t_mlip.material_id else result.disagree).append(composition)
        elif t_ref:
            result.only_reference.append(composition)
        elif t_mlip:
            result.only_mlip.append(composition)
    if result.rows:
        result.dA_vib_metrics = regression_metrics(
            [r.dA_vib_reference_meV for r in result.rows], [r.dA_vib_mlip_meV for r in result.rows], "ΔA_vib"
        )
    return result


def _transition(rows: Sequence[PolymorphRow], source: str, tol: float) -> Transition | None:
    cands = [r for r in rows if getattr(r, f"candidate_{source}")]
    if not cands:
        return None
    value, mid = _pick_lowest(((getattr(r, f"dA_{source}_meV"), r.material_id) for r in cands), tol)
    row = next(r for r in cands if r.material_id == mid)
    return Transition(composition=row.composition, ground_state_id=row.ground_state_id, material_id=mid, dA_meV=value)


def analyze_polymorphs(
    polymorphs: Sequence[Polymorph],
    temperatures: Sequence[str | int | float],
    offset_meV: float = DEFAULT_OFFSET_MEV,
    tie_tolerance_meV: float = DEFAULT_TIE_TOLERANCE_MEV,
) -> dict[str, PolymorphResult]:
    """:func:`analyze_temperature` at each temperature, keyed by temperature key (e.g. ``"T300"``)."""
    return ByTemperature(
        (key, analyze_temperature(polymorphs, key, offset_meV, tie_tolerance_meV))
        for key in (temperature_key(t) for t in temperatures)
    )


def temperature_value(t: str | int | float) -> float:
    """A temperature in K from a number or a temperature key: ``"T300"``, ``"300"``, ``300``,
    ``"T298_15"`` and ``"298.15"`` all read as numbers; anything else raises ValueError."""
    if isinstance(t, str):
        text = t.strip()
        if text[:1] in ("T", "t"):
            text = text[1:]
        value = float(text.replace("_", "."))
    else:
        value = float(t)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a temperature in K: {t!r}")
    return value


def temperature_key(t: str | int | float) -> str:
    """Key of a temperature in the stored thermal dicts: ``300 -> "T300"``, ``"300" -> "T300"``,
    ``298.15 -> "T298_15"``.

    Keys start with a letter and hold no dot, so a MongoDB path such as
    ``output.thermal.T300.A_vib_meV_per_atom`` names a field (an all-digit segment like
    ``thermal.300`` would also read as an array index) and needs no escaping.
    """
    value = temperature_value(t)
    text = str(int(value)) if value.is_integer() else repr(value).replace(".", "_")
    return f"T{text}"


def temperature_label(t: str | int | float) -> str:
    """The temperature of a key as people write it, for tables and plots: ``"T300" -> "300"``."""
    value = temperature_value(t)
    return str(int(value)) if value.is_integer() else repr(value)


class ByTemperature(dict):
    """A dict keyed by temperature keys (:func:`temperature_key`, ``"T300"``) that also answers to
    ``300``, ``300.0`` and ``"300"``: ``d[300] is d["T300"]``. Stored as a plain dict."""

    @staticmethod
    def _key(key: object) -> object:
        try:
            return temperature_key(key)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return key

    def __getitem__(self, key: object):
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: object, default=None):
        return super().get(self._key(key), default)
