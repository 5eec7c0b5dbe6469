"""BenchmarkMaker: PhononDocs of an MLIP against PhononDocs of a reference -> BenchmarkDoc + figures.

A thin job: it pairs the documents by ``material_id``, hands arrays to
:mod:`phonon_flows.core.metrics` and :mod:`phonon_flows.core.polymorphs`, and draws the figures
with :mod:`phonon_flows.report`. Documents may be PhononDoc models or their dicts (as read back
from a store); materials whose document failed, or that lack a counterpart, are skipped and listed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import Maker, job

from phonon_flows import engines  # engines.get_engine is looked up when a job runs (tests replace it)
from phonon_flows.core import metrics as M
from phonon_flows.core import phonons as ph_core
from phonon_flows.core.polymorphs import (
    DEFAULT_OFFSET_MEV,
    Polymorph,
    analyze_polymorphs,
    temperature_key,
    temperature_value,
)
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.makers.phonons import phonon_doc_from_phonopy, phonon_settings
from phonon_flows.report.figures import write_benchmark_figures
from phonon_flows.schemas.benchmark import (
    BenchmarkDoc,
    ForceBenchmark,
    MaterialBenchmark,
    PolymorphBenchmark,
    Regression,
    StabilityConfusion,
    ThermalMetrics,
    ThermalPair,
)
from phonon_flows.schemas.common import EngineInfo, MaterialError, get_field

logger = logging.getLogger(__name__)

#: reference engine kinds whose phonons are DFT (run here, or imported phonopy force sets)
DFT_KINDS = ("dft", "imported")
#: NAC treatments of a benchmark: both sides without NAC (the paper's comparison), or both with
#: the reference's Born charges
NAC_MODES = ("none", "reference")


def _reduced_formula(doc: Any) -> str:
    from pymatgen.core import Composition, Structure

    formula = get_field(doc, "formula")
    try:
        if formula:
            return Composition(formula).reduced_formula
        structure = get_field(doc, "structure")
        if isinstance(structure, Mapping):
            structure = Structure.from_dict(structure)
        return structure.composition.reduced_formula
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read the formula: {exc}", material_id=get_field(doc, "material_id"), stage="benchmark")


def _engine(doc: Any) -> EngineInfo | None:
    e = get_field(doc, "engine")
    if e is None:
        return None
    return e if isinstance(e, EngineInfo) else EngineInfo.model_validate(e)


def _engine_key(e: EngineInfo) -> tuple:
    return (e.name, e.kind, e.version, e.model_sha256)


def _thermal(doc: Any) -> dict[str, Any]:
    """The document's thermal dict with keys normalized to "T300"-style temperature keys."""
    out = {}
    for k, v in (get_field(doc, "thermal") or {}).items():
        try:
            out[temperature_key(k)] = v
        except (TypeError, ValueError):
            out[str(k)] = v
    return out


def _nac(doc: Any) -> dict[str, Any]:
    """A document's NAC treatment as a dict (older documents: only ``has_nac``)."""
    nac = get_field(doc, "nac")
    if nac is not None:
        return nac if isinstance(nac, Mapping) else nac.model_dump()
    return {"applied": bool(get_field(doc, "has_nac"))}


def _regression(m: M.RegressionMetrics | None) -> Regression | None:
    return Regression(**m.as_dict()) if m is not None else None


@dataclass
class _Compared:
    """What comparing the materials gives: their rows, the pooled frequencies, the band
    structures to draw and the polymorph candidates."""

    rows: list[MaterialBenchmark] = field(default_factory=list)
    pooled_ref: list[np.ndarray] = field(default_factory=list)
    pooled_mlip: list[np.ndarray] = field(default_factory=list)
    band_pairs: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    polymorphs: list[Polymorph] = field(default_factory=list)


@dataclass
class BenchmarkMaker(Maker):
    """Benchmark an MLIP's phonons against a reference's (the paper's metrics and polymorphs).

    Parameters
    ----------
    temperatures
        Temperature keys to compare (K, e.g. ``("300", "1000")``), kept where some material has
        them on both sides; None: every temperature present in both documents of some material.
    stability_tolerance_THz
        Unstable when the lowest frequency is below ``-|tolerance|`` (the paper: 0.5 THz). Stability
        is re-evaluated here from each document's lowest frequency, so both sides share it.
    polymorph_offset_meV
        Candidate threshold on ΔA (meV/atom) of the polymorph analysis.
    band_materials
        Materials whose band structures are drawn; None: the first ``max_band_plots`` ids with
        band structures on both sides.
    output_dir
        Folder of the figures; None: ``benchmark_figures`` in the job's directory.
    force_engine, force_engine_kwargs
        Engine spec (see :func:`phonon_flows.engines.get_engine`) evaluated on labelled sets;
        None with a TrainingDoc that has a ``model_sha256``: that MACE model.
    forces_key
        extxyz array of the reference forces in labelled sets (falls back to ``forces`` / the
        attached calculator's forces).
    nac
        ``"none"`` (default, the paper's comparison): both sides without the non-analytical term
        correction; ``"reference"``: both with the reference's Born charges (none when the
        reference has none). A side whose document has another NAC treatment is recomputed from
        its stored phonopy data (force constants are the same; only NAC changes); a pair that
        cannot be made like for like (no phonopy data, different supercell matrices) is skipped
        with the reason.
    """

    name: str = "benchmark"
    temperatures: Sequence[str] | None = ("300", "1000")
    stability_tolerance_THz: float = M.DEFAULT_STABILITY_TOLERANCE_THZ
    polymorph_offset_meV: float = DEFAULT_OFFSET_MEV
    band_materials: Sequence[str] | None = None
    max_band_plots: int = 4
    output_dir: str | None = None
    write_figures: bool = True
    force_engine: str | None = None
    force_engine_kwargs: dict[str, Any] = field(default_factory=dict)
    forces_key: str = "REF_forces"
    nac: str = "none"

    def __post_init__(self):
        if self.nac not in NAC_MODES:
            raise InputError(f"BenchmarkMaker(nac={self.nac!r}): choose one of {NAC_MODES}", stage="benchmark")

    @job(output_schema=BenchmarkDoc)
    def make(
        self,
        mlip_docs: Sequence[Any],
        reference_docs: Sequence[Any],
        training_doc: Any = None,
        labelled_sets: Mapping[str, Any] | None = None,
        enthalpies: Mapping[str, float] | None = None,
    ) -> BenchmarkDoc:
        """Compare ``mlip_docs`` with ``reference_docs`` (PhononDocs, matched by material_id).

        ``training_doc``: the MLIP's TrainingDoc (validation force errors, learning curve).
        ``labelled_sets``: name -> extxyz path or list of ASE Atoms with reference forces, on
        which the model's force errors are evaluated. ``enthalpies``: material_id -> reference
        enthalpy per atom (eV/atom) overriding the documents' ``enthalpy_per_atom_eV``.
        """
        return self.benchmark(mlip_docs, reference_docs, training_doc, labelled_sets, enthalpies)

    # The job body, callable without jobflow.
    def benchmark(
        self,
        mlip_docs: Sequence[Any],
        reference_docs: Sequence[Any],
        training_doc: Any = None,
        labelled_sets: Mapping[str, Any] | None = None,
        enthalpies: Mapping[str, float] | None = None,
        output_dir: str | Path | None = None,
    ) -> BenchmarkDoc:
        """The BenchmarkDoc: per-material comparison, pooled metrics, stability, polymorphs,
        force errors and (``write_figures``) the figures in ``output_dir``."""
        skipped: list[MaterialError] = []
        mlip = self._index(mlip_docs, "MLIP")
        ref = self._index(reference_docs, "reference")
        mlip_engine, ref_engine, others = self._engines(mlip, ref)
        recomputed: dict[str, list[str]] = {}
        pairs = self._like_for_like(self._pairs(mlip, ref, skipped), skipped, recomputed)
        temps = self._temperatures(pairs)
        notes: list[str] = []
        compared = self._compare_materials(pairs, temps, enthalpies, skipped, notes)
        for row in compared.rows:
            row.recomputed = recomputed.get(row.material_id, [])
        rows = compared.rows
        if not rows:
            reasons = "; ".join(f"{e.material_id}: {e.reason}" for e in skipped[:5])
            raise InputError(f"no material could be benchmarked ({reasons})", stage="benchmark")

        doc = BenchmarkDoc(
            mlip_engine=mlip_engine,
            reference_engine=ref_engine,
            mlip_label=mlip_engine.label,
            reference_label=ref_engine.label,
            reference_is_dft=ref_engine.kind in DFT_KINDS,
            other_engines=others,
            material_ids=[r.material_id for r in rows],
            n_materials=len(rows),
            materials=rows,
            skipped=skipped,
            temperatures=temps,
            nac=self.nac,
            polymorph_offset_meV=self.polymorph_offset_meV,
            polymorph_notes=notes,
        )
        self._add_metrics(doc, compared, temps)
        doc.forces = self._forces(training_doc, labelled_sets)

        if self.write_figures:
            out = Path(output_dir or self.output_dir or Path.cwd() / "benchmark_figures")
            band_pairs = compared.band_pairs
            chosen = self.band_materials if self.band_materials is not None else sorted(band_pairs)[: self.max_band_plots]
            curve = get_field(training_doc, "learning_curve") or None
            doc.figures = self._figures(doc, out, compared.pooled_ref, compared.pooled_mlip,
                                        {k: band_pairs[k] for k in chosen if k in band_pairs}, curve)
            doc.figure_dir = str(out.resolve())
        return doc

    # --- steps ----------------------------------------------------------------------------------

    @staticmethod
    def _engines(mlip: dict[str, Any], ref: dict[str, Any]) -> tuple[EngineInfo, EngineInfo, list[EngineInfo]]:
        """The MLIP and reference engines (the most common on each side) and any others seen."""
        engines_m = Counter()
        engines_r = Counter()
        all_engines: dict[tuple, EngineInfo] = {}
        for docs, counter in ((mlip, engines_m), (ref, engines_r)):
            for d in docs.values():
                e = _engine(d)
                if e is not None:
                    counter[_engine_key(e)] += 1
                    all_engines.setdefault(_engine_key(e), e)
        if not engines_m or not engines_r:
            raise InputError("benchmark needs MLIP and reference phonon documents with their engines", stage="benchmark")
        mlip_engine = all_engines[engines_m.most_common(1)[0][0]]
        ref_engine = all_engines[engines_r.most_common(1)[0][0]]
        others = [e for k, e in all_engines.items() if k not in (_engine_key(mlip_engine), _engine_key(ref_engine))]
        return mlip_engine, ref_engine, others

    def _pairs(self, mlip: dict[str, Any], ref: dict[str, Any], skipped: list[MaterialError]) -> list[tuple]:
        """``[(material_id, MLIP doc, reference doc)]`` of the materials with both documents good;
        the others are recorded in ``skipped``."""
        pairs: list[tuple[str, Any, Any]] = []
        for mid in sorted(set(mlip) | set(ref)):
            m, r = mlip.get(mid), ref.get(mid)
            reason = None
            if m is None:
                reason = "no MLIP phonon document"
            elif r is None:
                reason = "no reference phonon document"
            elif get_field(r, "failed"):
                reason = f"reference phonon document failed: {self._errors(r)}"
            elif get_field(m, "failed"):
                reason = f"MLIP phonon document failed: {self._errors(m)}"
            if reason:
                skipped.append(MaterialError(material_id=mid, stage="benchmark", reason=reason))
            else:
                pairs.append((mid, m, r))
        return pairs

    def _compare_materials(self, pairs, temps, enthalpies, skipped: list[MaterialError], notes: list[str]) -> _Compared:
        """Compare each pair (:meth:`_material`); a material that cannot be compared is skipped.
        Materials without a reference enthalpy stay out of the polymorph analysis (``notes``)."""
        c = _Compared()
        no_enthalpy: list[str] = []
        for mid, m, r in pairs:
            try:
                row, fr, fm = self._material(mid, m, r, temps, enthalpies)
            except PhononFlowsError as exc:
                skipped.append(MaterialError(material_id=mid, stage="benchmark", reason=exc.reason))
                continue
            c.rows.append(row)
            if fr is not None:
                c.pooled_ref.append(fr)
                c.pooled_mlip.append(fm)
                c.band_pairs[mid] = (get_field(r, "band_structure"), get_field(m, "band_structure"))
            if row.enthalpy_per_atom_eV is None:
                no_enthalpy.append(mid)
            else:
                c.polymorphs.append(
                    Polymorph(
                        material_id=mid,
                        composition=row.formula,
                        enthalpy_per_atom_eV=row.enthalpy_per_atom_eV,
                        A_vib_reference={t: p.A_vib_reference for t, p in row.thermal.items()},
                        A_vib_mlip={t: p.A_vib_mlip for t, p in row.thermal.items()},
                    )
                )
        if no_enthalpy:
            notes.append(
                f"left out of the polymorph analysis, no reference enthalpy: {', '.join(no_enthalpy)} (ΔH comes "
                "from the reference only; the MLIP's energies are not used: a forces-only model's energies mean nothing)"
            )
        return c

    def _add_metrics(self, doc: BenchmarkDoc, c: _Compared, temps: list[float]) -> None:
        """Pooled frequency metrics, thermal metrics per temperature, the stability confusion
        matrix and the polymorph analysis."""
        rows = c.rows
        if c.pooled_ref:
            doc.frequency = _regression(
                M.regression_metrics(np.concatenate(c.pooled_ref), np.concatenate(c.pooled_mlip), "frequencies")
            )
        for t in temps:
            prs = [row.thermal[t] for row in rows if t in row.thermal]
            if prs:
                doc.thermal[t] = ThermalMetrics(
                    temperature_K=temperature_value(t),
                    A_vib=_regression(M.regression_metrics([p.A_vib_reference for p in prs], [p.A_vib_mlip for p in prs])),
                    Cv=_regression(M.regression_metrics([p.Cv_reference for p in prs], [p.Cv_mlip for p in prs])),
                    S_vib=_regression(M.regression_metrics([p.S_reference for p in prs], [p.S_mlip for p in prs])),
                    Cv_cell=self._cell_metrics(prs, "Cv_cell"),
                    S_vib_cell=self._cell_metrics(prs, "S_cell"),
                )
        cm = M.confusion_matrix([r.stable_reference for r in rows], [r.stable_mlip for r in rows])
        doc.stability = StabilityConfusion(
            tolerance_THz=abs(self.stability_tolerance_THz),
            counts=cm.counts(),
            percentages=cm.percentages(),
            accuracy_percent=100.0 * cm.accuracy,
            total=cm.total,
        )
        if c.polymorphs and temps:
            for t, res in analyze_polymorphs(c.polymorphs, temps, self.polymorph_offset_meV).items():
                doc.polymorphs[t] = PolymorphBenchmark.model_validate(res.as_dict())

    @staticmethod
    def _cell_metrics(prs: list[ThermalPair], name: str) -> Regression | None:
        """Metrics of a per-primitive-cell quantity, over the pairs that have it on both sides."""
        vals = [(getattr(p, f"{name}_reference"), getattr(p, f"{name}_mlip")) for p in prs]
        vals = [(a, b) for a, b in vals if a is not None and b is not None]
        if not vals:
            return None
        return _regression(M.regression_metrics([a for a, _ in vals], [b for _, b in vals]))

    def _like_for_like(self, pairs: list[tuple], skipped: list[MaterialError],
                       recomputed: dict[str, list[str]]) -> list[tuple]:
        """Pairs on the same supercell matrix with the same NAC treatment (``self.nac``).

        A side with another NAC treatment is recomputed from its phonopy data; a pair that cannot
        be made like for like is skipped with the reason."""
        out = []
        for mid, m, r in pairs:
            sm, sr = get_field(m, "supercell_matrix"), get_field(r, "supercell_matrix")
            if sm is not None and sr is not None and not np.array_equal(np.asarray(sm), np.asarray(sr)):
                skipped.append(MaterialError(material_id=mid, stage="benchmark", reason=(
                    f"supercell matrices differ (MLIP {np.asarray(sm).tolist()}, reference {np.asarray(sr).tolist()}): "
                    "not a like-for-like comparison")))
                continue
            target = self._target_nac(r)
            try:
                m2, r2 = self._with_nac(m, target, mid, "MLIP"), self._with_nac(r, target, mid, "reference")
            except PhononFlowsError as exc:
                skipped.append(MaterialError(material_id=mid, stage="benchmark", reason=exc.reason))
                continue
            recomputed[mid] = [side for side, old, new in (("reference", r, r2), ("mlip", m, m2)) if new is not old]
            out.append((mid, m2, r2))
        return out

    def _target_nac(self, ref_doc: Any) -> dict[str, Any]:
        """The NAC treatment both sides get: none, or the reference's Born charges."""
        if self.nac == "none":
            return {"applied": False}
        return _nac(ref_doc)

    @staticmethod
    def _with_nac(doc: Any, target: dict[str, Any], mid: str, side: str) -> Any:
        """``doc`` when its NAC treatment is ``target``, else its phonons recomputed with ``target``
        from the phonopy data it stores (raises InputError when it has none)."""
        have = _nac(doc)
        if ph_core.same_nac(have, target):
            return doc
        want = "with the reference's Born charges" if target.get("applied") else "without NAC"
        has = f"NAC from {have.get('source') or 'Born charges'}" if have.get("applied") else "no NAC"
        text = get_field(doc, "phonopy_yaml")
        if not isinstance(text, str) or not text:
            raise InputError(f"the {side} phonons have {has} and the comparison is {want}, but the {side} document "
                             "has no phonopy data to recompute them: NAC differs, not like for like",
                             material_id=mid, stage="benchmark")
        settings = {**phonon_settings(), **(get_field(doc, "settings") or {})}
        phonon = ph_core.phonopy_from_yaml_text(text, symprec=settings["symprec"], fc_method=settings.get("fc_method"))
        ph_core.apply_nac(phonon, target, symprec=settings["symprec"])
        structure = get_field(doc, "structure")
        if isinstance(structure, Mapping):
            from pymatgen.core import Structure

            structure = Structure.from_dict(structure)
        new = phonon_doc_from_phonopy(
            phonon, structure if structure is not None else ph_core.to_structure(phonon.unitcell), _engine(doc),
            settings, material_id=mid, fc_method=get_field(doc, "fc_method"), displacement=get_field(doc, "displacement_A"),
            enthalpy_per_atom=get_field(doc, "enthalpy_per_atom_eV"), store_force_constants=False, store_phonopy_yaml=False,
            nac_source="reference" if target.get("applied") else None,
        )
        logger.info("benchmark: %s phonons of %s recomputed %s", side, mid, want)
        return new

    # --- pieces ---------------------------------------------------------------------------------

    @staticmethod
    def _index(docs: Sequence[Any], side: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for d in docs or []:
            mid = get_field(d, "material_id")
            if not mid:
                raise InputError(f"a {side} phonon document has no material_id", stage="benchmark")
            if mid in out:
                raise InputError(f"two {side} phonon documents", material_id=mid, stage="benchmark")
            out[mid] = d
        return out

    @staticmethod
    def _errors(doc: Any) -> str:
        errs = get_field(doc, "errors") or []
        text = "; ".join(str(get_field(e, "reason", e)) for e in errs)
        return text or "no reason recorded"

    def _temperatures(self, pairs: list[tuple[str, Any, Any]]) -> list[str]:
        found: set[str] = set()
        for _, m, r in pairs:
            found |= set(_thermal(m)) & set(_thermal(r))
        if self.temperatures is None:
            return sorted(found, key=temperature_value)
        wanted = [temperature_key(t) for t in self.temperatures]
        missing = [t for t in wanted if t not in found]
        if missing:
            logger.warning("benchmark: no material has thermal properties at %s K on both sides", ", ".join(missing))
        return [t for t in wanted if t in found]

    def _material(self, mid: str, m: Any, r: Any, temps: list[str], enthalpies: Mapping[str, float] | None):
        formula = _reduced_formula(r)
        min_r = self._min_frequency(r, mid, "reference")
        min_m = self._min_frequency(m, mid, "MLIP")
        freq, note, fr, fm = None, None, None, None
        br, bm = get_field(r, "band_structure"), get_field(m, "band_structure")
        if br is None or bm is None:
            note = "no band structure in the " + ("reference" if br is None else "MLIP") + " document"
        else:
            try:
                fr, fm = M.paired_frequencies(
                    get_field(br, "frequencies"), get_field(bm, "frequencies"), get_field(br, "qpoints"), get_field(bm, "qpoints"), mid
                )
                freq = _regression(M.regression_metrics(fr, fm, "frequencies"))
            except PhononFlowsError as exc:
                note = exc.reason
        thermal: dict[str, ThermalPair] = {}
        tr, tm = _thermal(r), _thermal(m)
        no_modes: list[str] = []
        for t in temps:
            a, b = tr.get(t), tm.get(t)
            if a is None or b is None:
                continue
            # C_v = 0 at T > 0: phonopy counted no mode above the cutoff (every mode imaginary), so that
            # side has no vibrational free energy; comparing its A_vib (phonopy's empty sum, 0) would be wrong
            empty = [side for side, x in (("reference", a), ("MLIP", b))
                     if temperature_value(t) > 0 and not get_field(x, "Cv_J_per_K_mol")]
            if empty:
                no_modes.append(f"{t} ({', '.join(empty)})")
                continue
            thermal[t] = ThermalPair(
                A_vib_reference=get_field(a, "A_vib_meV_per_atom"),
                A_vib_mlip=get_field(b, "A_vib_meV_per_atom"),
                Cv_reference=get_field(a, "Cv_J_per_K_mol"),
                Cv_mlip=get_field(b, "Cv_J_per_K_mol"),
                S_reference=get_field(a, "S_J_per_K_mol"),
                S_mlip=get_field(b, "S_J_per_K_mol"),
                Cv_cell_reference=get_field(a, "Cv_J_per_K_mol_cell"),
                Cv_cell_mlip=get_field(b, "Cv_J_per_K_mol_cell"),
                S_cell_reference=get_field(a, "S_J_per_K_mol_cell"),
                S_cell_mlip=get_field(b, "S_J_per_K_mol_cell"),
            )
        # ΔH comes from the reference only (a forces-only MLIP's energies mean nothing)
        h = None
        if enthalpies and mid in enthalpies:
            h = float(enthalpies[mid])
        elif get_field(r, "enthalpy_per_atom_eV") is not None:
            h = float(get_field(r, "enthalpy_per_atom_eV"))
        row = MaterialBenchmark(
            material_id=mid,
            formula=formula,
            frequency=freq,
            frequency_note=note,
            min_frequency_reference_THz=min_r,
            min_frequency_mlip_THz=min_m,
            stable_reference=M.is_stable(min_r, self.stability_tolerance_THz),
            stable_mlip=M.is_stable(min_m, self.stability_tolerance_THz),
            thermal=thermal,
            thermal_note=("thermal properties not compared at " + ", ".join(no_modes)
                          + ": no real mode above the cutoff frequency (all imaginary)") if no_modes else None,
            enthalpy_per_atom_eV=h,
            committee_spread_THz=get_field(m, "committee_spread_THz"),
            nac_applied=bool(_nac(r).get("applied")),
        )
        return row, fr, fm

    @staticmethod
    def _min_frequency(doc: Any, mid: str, side: str) -> float:
        f = get_field(doc, "min_frequency_THz")
        if f is None:
            bands = get_field(doc, "band_structure")
            if bands is None:
                raise InputError(f"the {side} document has neither min_frequency_THz nor a band structure",
                                 material_id=mid, stage="benchmark")
            f = float(np.min(np.asarray(get_field(bands, "frequencies"), dtype=float)))
        return float(f)

    def _forces(self, training_doc: Any, labelled_sets: Mapping[str, Any] | None) -> dict[str, ForceBenchmark]:
        out: dict[str, ForceBenchmark] = {}
        for name, prefix in (("training", "train"), ("validation", "valid")):  # the trainer's own sets
            if get_field(training_doc, f"{prefix}_force_mae") is not None:
                out[name] = ForceBenchmark(
                    mae_meV_per_A=float(get_field(training_doc, f"{prefix}_force_mae")),
                    rmse_meV_per_A=get_field(training_doc, f"{prefix}_force_rmse"),
                    n_structures=get_field(training_doc, f"n_{prefix}") or None,
                    source="training",
                )
        if labelled_sets:
            engine = self._build_engine(training_doc)
            for name, spec in labelled_sets.items():
                atoms_list, ref_forces = read_labelled_set(spec, self.forces_key, name)
                results = engine.compute([a.copy() for a in atoms_list], material_id=name)
                fm = M.force_metrics(ref_forces, [res.forces for res in results])
                out[name] = ForceBenchmark(**fm.as_dict(), source="evaluated")
        return out

    def _build_engine(self, training_doc: Any):
        if self.force_engine is not None:
            return engines.get_engine(self.force_engine, **self.force_engine_kwargs)
        sha = get_field(training_doc, "model_sha256")
        if sha:
            return engines.get_engine("mace", model_sha256=sha, **self.force_engine_kwargs)
        raise InputError("labelled sets given but no force engine: set force_engine or give the TrainingDoc",
                         stage="benchmark")

    @staticmethod
    def _figures(doc, out, pooled_ref, pooled_mlip, band_pairs, curve) -> dict[str, str]:
        freq = (np.concatenate(pooled_ref), np.concatenate(pooled_mlip)) if pooled_ref else None
        return write_benchmark_figures(doc, out, frequency_pairs=freq, band_pairs=band_pairs, learning_curve=curve)


def read_labelled_set(spec: Any, forces_key: str = "REF_forces", name: str = "labelled set"):
    """ASE Atoms and reference forces (eV/Å) of a labelled set: an extxyz path or a list of Atoms.

    Reference forces are the ``forces_key`` array, else the ``forces`` array, else the forces of
    the attached (single-point) calculator.
    """
    from ase import Atoms
    from ase.io import read

    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"labelled set {name!r}: no file {path}", stage="benchmark")
        atoms_list = read(path, index=":")
    else:
        atoms_list = list(spec)
    if not atoms_list or not all(isinstance(a, Atoms) for a in atoms_list):
        raise InputError(f"labelled set {name!r}: need a non-empty extxyz file or list of ASE Atoms", stage="benchmark")
    forces = []
    for i, a in enumerate(atoms_list):
        if forces_key in a.arrays:
            f = a.arrays[forces_key]
        elif "forces" in a.arrays:
            f = a.arrays["forces"]
        elif a.calc is not None and "forces" in getattr(a.calc, "results", {}):
            f = a.calc.results["forces"]
        else:
            raise InputError(f"labelled set {name!r}: structure {i} has no reference forces ({forces_key!r})",
                             stage="benchmark")
        forces.append(np.asarray(f, dtype=float))
    return atoms_list, forces
