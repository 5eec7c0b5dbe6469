"""ForceDoc (labels of one structure) and RelaxDoc (a relaxed structure and its enthalpy).

Both say which engine made them (``engine``: VASP = DFT, or a reference potential standing in
for DFT). Forces are large: jobs put :data:`FORCE_DATA_FIELDS` into the ``data`` store.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator
from pymatgen.core import Structure

from phonon_flows.schemas.common import EngineInfo

#: ForceDoc fields that jobs put in the "data" additional store
FORCE_DATA_FIELDS = ("forces",)


class ForceDoc(BaseModel):
    """Energy, forces and stress of one (perturbed) structure from one engine."""

    material_id: str = Field(description="The material's id in the campaign")
    formula: str | None = Field(default=None, description="Reduced formula")
    structure: Structure = Field(description="The structure that was computed")
    n_atoms: int = Field(description="Number of atoms")
    energy: float = Field(description="Total energy, eV (VASP: energy(sigma->0), as pymatgen/emmet report it)")
    energy_per_atom: float = Field(description="Total energy per atom, eV/atom")
    forces: list[list[float]] = Field(description="Forces (n_atoms, 3), eV/Å (data store)")
    stress: list[list[float]] | None = Field(
        default=None, description="Stress tensor 3x3, eV/Å^3, ASE sign (positive = tensile; VASP's kB value times -0.1 GPa)"
    )
    max_force: float | None = Field(default=None, description="Largest force norm on an atom, eV/Å")
    engine: EngineInfo = Field(description="Engine that computed the labels and its settings")
    perturbation_index: int | None = Field(default=None, description="Index of the structure in its PerturbationDoc")
    dir_name: str | None = Field(default=None, description="Directory of the calculation (VASP) or of the source file")

    @field_validator("stress")
    @classmethod
    def _stress_is_3x3(cls, value):
        if value is not None and (len(value) != 3 or any(len(row) != 3 for row in value)):
            raise ValueError("stress must be a 3x3 tensor")
        return value


class RelaxDoc(BaseModel):
    """A structure relaxed (positions and cell) with one engine, and its enthalpy."""

    material_id: str = Field(description="The material's id in the campaign")
    formula: str | None = Field(default=None, description="Reduced formula")
    input_structure: Structure = Field(description="Structure before the relaxation")
    structure: Structure = Field(description="Relaxed structure")
    energy_per_atom: float = Field(description="Total energy of the relaxed structure per atom, eV/atom")
    enthalpy_per_atom: float = Field(description="Enthalpy H = E + PV per atom at the target pressure, eV/atom")
    pressure: float = Field(default=0.0, description="Target pressure, GPa")
    converged: bool | None = Field(default=None, description="Whether the force/stress criterion was reached")
    fmax: float | None = Field(default=None, description="Force criterion of the relaxation, eV/Å")
    max_force: float | None = Field(default=None, description="Largest force norm at the end, eV/Å")
    n_steps: int | None = Field(default=None, description="Optimizer steps (ionic steps for VASP)")
    volume_change: float | None = Field(default=None, description="Relative change of the cell volume")
    warnings: list[str] = Field(default_factory=list, description="What to look at: e.g. a volume change above 3 %")
    engine: EngineInfo = Field(description="Engine that relaxed the structure and its settings")
    dir_name: str | None = Field(default=None, description="Directory of the calculation, when there is one")


class FailedCalculation(BaseModel):
    """A labelling calculation (VASP through atomate2 + custodian) that gave no result, and why.

    Takes the place of the ForceDoc so that the cause (custodian's error and corrections, VASP's
    own error output, an unconverged SCF) reaches the documents that need the forces (a failed
    PhononDoc, the TrainingSetDoc's failures) instead of staying in a job log.
    """

    failed: bool = Field(default=True, description="Always True")
    material_id: str | None = Field(default=None, description="The material's id in the campaign")
    perturbation_index: int | None = Field(default=None, description="Index of the structure in its PerturbationDoc")
    stage: str = Field(default="label", description="Stage of the calculation (label, relax)")
    reason: str = Field(description="Why it failed: the exception, custodian's errors and VASP's last error lines")
    custodian_errors: list[str] = Field(default_factory=list, description="Errors custodian's handlers detected")
    dir_name: str | None = Field(default=None, description="Folder of the calculation (inputs, outputs, logs)")
