"""Benchmark of an MLIP's phonons against a reference's: the paper's metrics, stability confusion
matrix, force errors and polymorph transitions.

Units: frequencies THz; A_vib and ΔA meV/atom; C_v and S_vib J/(K·mol) per mole of atoms
(``Cv``, ``S_vib``) and per mole of primitive cells (``Cv_cell``, ``S_vib_cell``: phonopy's unit,
the one the paper's C_v and S_vib MAEs are in); forces meV/Å. Temperatures are keys like ``"T300"``
(K; lookups by ``300`` work too). R² is None where undefined (fewer than two values). ``nac`` says
whether both sides were compared without the non-analytical correction (``"none"``, the paper's
comparison) or both with the reference's Born charges (``"reference"``).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from phonon_flows.schemas.common import ByTemperature, EngineInfo, MaterialError, by_temperature


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


#: a float that is None where undefined (NaN from the metrics, e.g. R² of a single value)
OptFloat = Annotated[float | None, BeforeValidator(_nan_to_none)]


class Regression(BaseModel):
    """MAE, RMSE, R² and largest absolute error; units given by the field that holds this."""

    mae: float = Field(description="Mean absolute error (units of the quantity)")
    rmse: float = Field(description="Root-mean-square error (units of the quantity)")
    r2: OptFloat = Field(default=None, description="Coefficient of determination against the reference")
    max_abs_error: float = Field(description="Largest absolute error (units of the quantity)")
    n: int = Field(description="Number of values compared")


class ThermalMetrics(BaseModel):
    """Errors of thermal properties at one temperature over all benchmarked materials."""

    temperature_K: float = Field(description="Temperature (K)")
    A_vib: Regression | None = Field(default=None, description="Vibrational Helmholtz free energy, meV/atom")
    Cv: Regression | None = Field(default=None, description="Heat capacity at constant volume, J/(K·mol of atoms)")
    S_vib: Regression | None = Field(default=None, description="Vibrational entropy, J/(K·mol of atoms)")
    Cv_cell: Regression | None = Field(
        default=None, description="Heat capacity at constant volume, J/(K·mol of primitive cells) (the paper's unit)"
    )
    S_vib_cell: Regression | None = Field(
        default=None, description="Vibrational entropy, J/(K·mol of primitive cells) (the paper's unit)"
    )


class ThermalPair(BaseModel):
    """Thermal properties of one material at one temperature, reference and MLIP."""

    A_vib_reference: float = Field(description="Reference A_vib, meV/atom")
    A_vib_mlip: float = Field(description="MLIP A_vib, meV/atom")
    Cv_reference: float = Field(description="Reference C_v, J/(K·mol of atoms)")
    Cv_mlip: float = Field(description="MLIP C_v, J/(K·mol of atoms)")
    S_reference: float = Field(description="Reference S_vib, J/(K·mol of atoms)")
    S_mlip: float = Field(description="MLIP S_vib, J/(K·mol of atoms)")
    Cv_cell_reference: float | None = Field(default=None, description="Reference C_v, J/(K·mol of primitive cells)")
    Cv_cell_mlip: float | None = Field(default=None, description="MLIP C_v, J/(K·mol of primitive cells)")
    S_cell_reference: float | None = Field(default=None, description="Reference S_vib, J/(K·mol of primitive cells)")
    S_cell_mlip: float | None = Field(default=None, description="MLIP S_vib, J/(K·mol of primitive cells)")


class MaterialBenchmark(BaseModel):
    """One material's comparison."""

    material_id: str = Field(description="The material's id")
    formula: str = Field(description="Reduced formula")
    frequency: Regression | None = Field(
        default=None, description="Frequencies over the full dispersion (bands sorted per q-point), THz"
    )
    frequency_note: str | None = Field(default=None, description="Why frequencies were not compared, if they were not")
    thermal_note: str | None = Field(
        default=None, description="Why thermal properties were not compared at some temperatures, if they were not"
    )
    min_frequency_reference_THz: float = Field(description="Lowest reference frequency, THz")
    min_frequency_mlip_THz: float = Field(description="Lowest MLIP frequency, THz")
    stable_reference: bool = Field(description="Dynamically stable in the reference at the benchmark tolerance")
    stable_mlip: bool = Field(description="Dynamically stable with the MLIP at the benchmark tolerance")
    thermal: by_temperature(ThermalPair) = Field(default_factory=ByTemperature, description="Per temperature key, e.g. 'T300'")
    enthalpy_per_atom_eV: float | None = Field(default=None, description="Reference enthalpy per atom, eV/atom")
    committee_spread_THz: float | None = Field(
        default=None, description="The MLIP committee's frequency spread for this material (PhononDoc."
        "committee_spread_THz), THz; None for a single model")
    nac_applied: bool = Field(default=False, description="Both sides compared with the reference's Born charges (NAC)")
    recomputed: list[str] = Field(
        default_factory=list,
        description="Sides ('reference', 'mlip') whose phonons were recomputed from their force constants for the "
        "benchmark's NAC treatment",
    )


class StabilityConfusion(BaseModel):
    """Confusion matrix of dynamical stability; *stable* is the positive class.

    true_stable: stable in both; false_stable: unstable in the reference, MLIP says stable;
    true_unstable: unstable in both; false_unstable: stable in the reference, MLIP says unstable.
    """

    tolerance_THz: float = Field(description="Unstable when the lowest frequency is below -tolerance_THz (THz)")
    positive_class: str = Field(default="stable", description="The positive class of the confusion matrix")
    counts: dict[str, int] = Field(description="true_stable, false_stable, true_unstable, false_unstable")
    percentages: dict[str, OptFloat] = Field(description="The counts as % of all materials")
    accuracy_percent: OptFloat = Field(default=None, description="(true_stable + true_unstable) / total, %")
    total: int = Field(description="Number of materials")


class ForceBenchmark(BaseModel):
    """Force errors of the MLIP on one labelled set, over Cartesian components."""

    mae_meV_per_A: float = Field(description="Force MAE, meV/Å")
    rmse_meV_per_A: float | None = Field(default=None, description="Force RMSE, meV/Å")
    r2: OptFloat = Field(default=None, description="R² of force components")
    n_components: int | None = Field(default=None, description="Number of force components compared")
    n_structures: int | None = Field(default=None, description="Number of structures")
    source: str = Field(description="'training' (validation metric recorded by training) or 'evaluated' (here)")


class PolymorphRowDoc(BaseModel):
    """One non-ground-state polymorph at one temperature, meV/atom."""

    material_id: str
    composition: str = Field(description="Reduced formula")
    ground_state_id: str = Field(description="Polymorph of lowest reference enthalpy")
    dH_meV: float = Field(description="H - H_ground_state, meV/atom")
    dA_vib_reference_meV: float = Field(description="ΔA_vib from the reference's phonons, meV/atom")
    dA_vib_mlip_meV: float = Field(description="ΔA_vib from the MLIP's phonons, meV/atom")
    dA_reference_meV: float = Field(description="ΔH + ΔA_vib(reference), meV/atom")
    dA_mlip_meV: float = Field(description="ΔH + ΔA_vib(MLIP), meV/atom")
    candidate_reference: bool = Field(description="ΔA(reference) < offset")
    candidate_mlip: bool = Field(description="ΔA(MLIP) < offset")


class TransitionDoc(BaseModel):
    """Predicted transition of a composition from its ground state to ``material_id``."""

    composition: str
    ground_state_id: str
    material_id: str
    dA_meV: float = Field(description="ΔA of the transition, meV/atom")


class PolymorphBenchmark(BaseModel):
    """Polymorph analysis at one temperature (see phonon_flows.core.polymorphs)."""

    temperature: str = Field(description="Temperature key, e.g. 'T300' (K)")
    offset_meV: float = Field(description="Candidate threshold on ΔA, meV/atom")
    rows: list[PolymorphRowDoc] = Field(default_factory=list)
    transitions_reference: list[TransitionDoc] = Field(default_factory=list)
    transitions_mlip: list[TransitionDoc] = Field(default_factory=list)
    common: list[str] = Field(default_factory=list, description="Compositions with the same transition in both")
    only_reference: list[str] = Field(default_factory=list)
    only_mlip: list[str] = Field(default_factory=list)
    disagree: list[str] = Field(default_factory=list, description="Both predict a transition, to different polymorphs")
    n_common: int = Field(description="Number of common transitions")
    n_reference: int = Field(description="Number of transitions predicted with the reference's ΔA_vib")
    n_mlip: int = Field(description="Number of transitions predicted with the MLIP's ΔA_vib")
    dA_vib_metrics: Regression | None = Field(default=None, description="ΔA_vib, MLIP vs reference, meV/atom")
    single_polymorph: list[str] = Field(default_factory=list, description="Compositions with one polymorph")
    missing: list[str] = Field(default_factory=list, description="Materials without A_vib at this temperature")


class PaperNumbers(BaseModel):
    """The paper's results (Lee, Hegde, Wolverton, Xia), for comparison. Constants.

    C_v and S_vib MAEs are per mole of primitive cells (phonopy's unit): per atom they would be
    impossible (S MAE at 1000 K times 1000 K is 9x the A_vib MAE per atom, while |T·ΔS| <= |ΔA|
    mode by mode). The paper compares without NAC, against DFT (PBE).
    """

    frequency_mae_THz: float = 0.18
    frequency_r2: float = 0.997
    A_vib_mae_meV_per_atom: by_temperature(float) = Field(default_factory=lambda: ByTemperature({"T300": 2.19, "T1000": 9.30}))
    A_vib_r2: by_temperature(float) = Field(default_factory=lambda: ByTemperature({"T300": 0.995, "T1000": 0.982}))
    Cv_mae_J_per_K_mol_cell: by_temperature(float) = Field(default_factory=lambda: ByTemperature({"T300": 1.49, "T1000": 1.31}))
    S_vib_mae_J_per_K_mol_cell: by_temperature(float) = Field(default_factory=lambda: ByTemperature({"T300": 6.99, "T1000": 8.30}))
    dA_vib_mae_meV_per_atom: by_temperature(float) = Field(default_factory=lambda: ByTemperature({"T300": 4.27, "T1000": 20.83}))
    dA_vib_r2: by_temperature(float) = Field(default_factory=lambda: ByTemperature({"T300": 0.778, "T1000": 0.315}))
    stability_accuracy_percent: float = 86.2
    force_mae_meV_per_A: float = 20.5
    train_force_mae_meV_per_A: float = 18.8
    #: common transitions / transitions predicted with DFT
    polymorph_agreement: by_temperature(tuple[int, int]) = Field(
        default_factory=lambda: ByTemperature({"T300": (16, 19), "T1000": (13, 19)})
    )
    #: transitions predicted with the MLIP (the paper gives it at 1000 K)
    polymorph_transitions_mlip: by_temperature(int) = Field(default_factory=lambda: ByTemperature({"T1000": 18}))
    n_test_materials: int = 384
    nac: str = "none"


#: the paper's numbers
PAPER_NUMBERS = PaperNumbers()


class BenchmarkDoc(BaseModel):
    """An MLIP's phonons benchmarked against a reference (DFT, imported DFT, or a reference potential)."""

    mlip_engine: EngineInfo = Field(description="Engine of the MLIP phonons")
    reference_engine: EngineInfo = Field(description="Engine of the reference phonons")
    mlip_label: str = Field(description="Name of the MLIP in tables and plots")
    reference_label: str = Field(
        description="Name of the reference in tables and plots; says 'reference potential, NOT DFT' when it is one"
    )
    reference_is_dft: bool = Field(description="True when the reference phonons come from DFT (run or imported)")
    other_engines: list[EngineInfo] = Field(
        default_factory=list, description="Further distinct engines found among the documents (mixed inputs)"
    )
    material_ids: list[str] = Field(default_factory=list, description="Materials benchmarked")
    n_materials: int = Field(default=0, description="Number of materials benchmarked")
    materials: list[MaterialBenchmark] = Field(default_factory=list, description="Per-material rows")
    skipped: list[MaterialError] = Field(default_factory=list, description="Materials left out, with the reason")
    temperatures: list[str] = Field(default_factory=list, description="Temperature keys compared, e.g. 'T300' (K)")
    nac: str = Field(
        default="none",
        description="NAC treatment of both sides: 'none' (without NAC, the paper's comparison) or 'reference' "
        "(the reference's Born charges applied to both)",
    )
    frequency: Regression | None = Field(
        default=None, description="Frequencies pooled over all dispersions (bands sorted per q-point), THz"
    )
    thermal: by_temperature(ThermalMetrics) = Field(default_factory=ByTemperature, description="Per temperature key")
    stability: StabilityConfusion | None = Field(default=None, description="Dynamical-stability confusion matrix")
    forces: dict[str, ForceBenchmark] = Field(
        default_factory=dict, description="Force errors per set: 'validation' (from training) and labelled sets"
    )
    polymorphs: by_temperature(PolymorphBenchmark) = Field(default_factory=ByTemperature, description="Per temperature key")
    polymorph_notes: list[str] = Field(
        default_factory=list, description="Why the polymorph analysis left materials out or was not done"
    )
    polymorph_offset_meV: float = Field(default=10.0, description="Candidate threshold on ΔA, meV/atom")
    figures: dict[str, str] = Field(default_factory=dict, description="Figure name -> PNG file name in figure_dir")
    figure_dir: str | None = Field(default=None, description="Folder holding the figures")
    paper: PaperNumbers = Field(default_factory=PaperNumbers, description="The paper's numbers, for comparison")
