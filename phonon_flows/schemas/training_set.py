"""TrainingSetDoc: labelled structures of many materials as one extended-XYZ training set.

``xyz`` (the file ``mace_run_train`` reads) goes to the ``data`` store (:data:`TRAINING_SET_DATA_FIELDS`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from phonon_flows.schemas.common import EngineInfo, MaterialError

#: TrainingSetDoc fields that jobs put in the "data" additional store
TRAINING_SET_DATA_FIELDS = ("xyz",)


class Histogram(BaseModel):
    """Range and histogram of one quantity over the training set."""

    unit: str = Field(description="Unit of the values")
    n: int = Field(description="Number of values")
    min: float | None = Field(default=None, description="Smallest value")
    max: float | None = Field(default=None, description="Largest value")
    mean: float | None = Field(default=None, description="Mean value")
    std: float | None = Field(default=None, description="Standard deviation")
    bin_edges: list[float] = Field(default_factory=list, description="Bin edges (n_bins + 1)")
    counts: list[int] = Field(default_factory=list, description="Values per bin (n_bins)")


class TrainingSetStatistics(BaseModel):
    """The statistics of the paper's Fig. 2."""

    n_materials: int = Field(description="Materials in the training set")
    n_structures: int = Field(description="Structures in the training set")
    n_atoms: int = Field(description="Atoms over all structures")
    element_counts: dict[str, int] = Field(description="Number of materials containing each element")
    element_atom_counts: dict[str, int] = Field(description="Number of atoms of each element over all structures")
    energy_per_atom: Histogram = Field(description="Reference energy per atom, eV/atom")
    force_components: Histogram = Field(description="Reference force components, eV/Å")
    volume_per_atom: Histogram = Field(description="Volume per atom, Å^3/atom")
    density: Histogram = Field(description="Mass density, g/cm^3")


class TrainingSetDoc(BaseModel):
    """A MACE training set: extxyz text plus what is in it, who labelled it, and what failed."""

    material_ids: list[str] = Field(description="Materials whose structures are in the set")
    n_structures: int = Field(description="Number of structures")
    n_atoms: int = Field(description="Number of atoms over all structures")
    elements: list[str] = Field(default_factory=list, description="Chemical symbols present")
    energy_key: str = Field(description="extxyz info key of the reference energy (eV); mace --energy_key")
    forces_key: str = Field(description="extxyz arrays key of the reference forces (eV/Å); mace --forces_key")
    stress_key: str = Field(description="extxyz info key of the reference stress (Voigt, eV/Å^3, ASE sign); mace --stress_key")
    config_type: str = Field(description="config_type written in each structure's info")
    xyz: str = Field(description="The extended-XYZ text (data store)")
    xyz_sha256: str = Field(description="sha256 of the extxyz text")
    statistics: TrainingSetStatistics = Field(description="Statistics of the paper's Fig. 2")
    engines: list[EngineInfo] = Field(default_factory=list, description="Engines that labelled the structures")
    structures_per_material: dict[str, int] = Field(default_factory=dict, description="Structures of each material")
    failed: list[MaterialError] = Field(default_factory=list, description="Materials left out, with stage and reason")
