"""PhononDoc: harmonic phonons of one material with one force engine.

The summary (thermal properties, stability, settings, engine) stays small and queryable; its
temperature keys are ``"T300"``-style (:func:`phonon_flows.core.polymorphs.temperature_key`), so
``output.thermal.T300.A_vib_meV_per_atom`` is a plain MongoDB path. The large arrays (``band_structure``, ``dos``, ``force_constants``, ``phonopy_yaml``) are listed in
:data:`PHONON_DATA_FIELDS` and go to the jobflow ``data`` store (GridFS with MongoDB).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pymatgen.core import Structure

from phonon_flows.schemas.common import ByTemperature, EngineInfo, by_temperature

#: PhononDoc fields that jobs put in the "data" additional store
PHONON_DATA_FIELDS = ("band_structure", "dos", "force_constants", "phonopy_yaml")


class ThermalProperties(BaseModel):
    """Harmonic thermal properties at one temperature.

    Two moles: per mole of *atoms* (``..._J_per_K_mol``: comparable across materials) and per
    mole of *primitive cells* (``..._J_per_K_mol_cell``: phonopy's native unit, the one the
    paper's C_v and S_vib MAEs are in). The second is the first times ``natom_primitive``.
    """

    temperature_K: float = Field(description="Temperature in K")
    A_vib_meV_per_atom: float = Field(
        description="Helmholtz vibrational free energy (zero-point energy included) in meV/atom"
    )
    Cv_J_per_K_mol: float = Field(description="Heat capacity at constant volume in J/(K mol of atoms)")
    S_J_per_K_mol: float = Field(description="Vibrational entropy in J/(K mol of atoms)")
    Cv_J_per_K_mol_cell: float | None = Field(
        default=None, description="Heat capacity at constant volume in J/(K mol of primitive cells) (phonopy's unit)"
    )
    S_J_per_K_mol_cell: float | None = Field(
        default=None, description="Vibrational entropy in J/(K mol of primitive cells) (phonopy's unit)"
    )
    A_vib_kJ_per_mol_cell: float | None = Field(
        default=None, description="Helmholtz vibrational free energy in kJ/(mol of primitive cells) (phonopy's unit)"
    )


class NacInfo(BaseModel):
    """Whether the non-analytical term correction (NAC) was applied to the phonons, and with what."""

    applied: bool = Field(default=False, description="True when the dynamical matrix includes the NAC term")
    source: str | None = Field(
        default=None,
        description="Where the Born charges came from: 'BORN file', 'phonopy yaml', 'nac_params' (given), "
        "'DFPT (LEPSILON)', or 'reference' (the benchmark applied the reference's charges)",
    )
    born: list[list[list[float]]] | None = Field(
        default=None, description="Born effective charges of the primitive cell's atoms (natom_primitive, 3, 3), e"
    )
    dielectric: list[list[float]] | None = Field(
        default=None, description="High-frequency dielectric tensor epsilon_inf (3, 3), dimensionless"
    )
    factor: float | None = Field(default=None, description="phonopy's NAC unit-conversion factor (calculator units)")
    method: str | None = Field(default=None, description="phonopy's NAC method ('gonze' or 'wang')")


class PhononMode(BaseModel):
    """One phonon mode: where the lowest frequency was found."""

    qpoint: list[float] = Field(description="q-point in reduced coordinates of the primitive cell's reciprocal lattice")
    band_index: int = Field(description="Band index (0-based, bands sorted by frequency at each q)")
    frequency_THz: float = Field(description="Frequency in THz (negative: imaginary)")
    source: Literal["band", "mesh"] = Field(description="Found on the band path or on the thermal q-mesh")


class PhononBandStructure(BaseModel):
    """Phonon dispersion along seekpath's high-symmetry path (large: data store)."""

    qpoints: list[list[float]] = Field(description="q-points (nq, 3), reduced coordinates of the primitive reciprocal lattice")
    distances: list[float] = Field(description="Distance along the path of each q-point (nq), 1/Å (no 2π)")
    frequencies: list[list[float]] = Field(description="Frequencies (nq, nbands) in THz, negative for imaginary modes")
    labels: list[str] = Field(description="Labels of the path's end points, in phonopy's convention")
    segment_labels: list[list[str]] = Field(description="Start and end label of each segment")
    path_connections: list[bool] = Field(description="Whether each segment connects to the next one")
    segment_nqpoints: list[int] = Field(description="Number of q-points of each segment (they add up to nq)")


class PhononDos(BaseModel):
    """Total phonon density of states on the thermal q-mesh (tetrahedron method)."""

    frequency_points_THz: list[float] = Field(description="Frequencies in THz")
    total_dos: list[float] = Field(description="States per THz per primitive cell")


class ForceConstantsData(BaseModel):
    """Second-order force constants (compact form, large: data store)."""

    force_constants: list = Field(
        description="Force constants in eV/Å^2, shape (natom_primitive, natom_supercell, 3, 3) (phonopy's compact form; (natom_supercell, natom_supercell, 3, 3) when imported so)"
    )
    shape: list[int] = Field(description="Shape of force_constants")
    p2s_map: list[int] = Field(description="Supercell index of each primitive atom (rows of the compact form)")


class PhononDoc(BaseModel):
    """Harmonic phonons of one material computed (or imported) with one force engine."""

    material_id: str | None = Field(default=None, description="The material's id in the campaign")
    formula: str | None = Field(default=None, description="Reduced formula (None only when nothing could be read)")
    chemsys: str | None = Field(default=None, description="Chemical system, elements sorted and joined by '-'")
    structure: Structure | None = Field(default=None, description="Unit cell the supercells were built from (Å)")
    natom_primitive: int | None = Field(default=None, description="Number of atoms of the primitive cell")
    natom_supercell: int | None = Field(default=None, description="Number of atoms of the supercell")
    supercell_matrix: list[list[int]] | None = Field(default=None, description="Supercell matrix on the unit cell")
    primitive_matrix: list[list[float]] | None = Field(default=None, description="Primitive matrix on the unit cell")
    displacement_A: float | None = Field(default=None, description="Displacement amplitude in Å")
    fc_method: str | None = Field(
        default=None, description="Force constants: finite-difference, symfc, or imported (read as such)"
    )
    n_displacements: int | None = Field(default=None, description="Number of displaced supercells used")
    residual_force_max_eV_A: float | None = Field(
        default=None,
        description="Largest force (eV/Å) on an atom of the undisplaced supercell, subtracted from the displaced "
        "supercells' forces (phonopy's --fz); None when not computed (symmetry forbids it, residual_forces "
        "'ignore', or forces made elsewhere)",
    )
    committee_spread_THz: float | None = Field(
        default=None,
        description="Disagreement of a committee model's members (MACE models trained with different seeds) on "
        "these phonons, THz: the mean over member pairs of the mean absolute difference of their frequencies on a "
        "q-mesh. Large where the potential extrapolates; None for a single model or another engine",
    )
    has_nac: bool = Field(
        default=False, description="Whether the non-analytical term correction (Born charges) was applied (= nac.applied)"
    )
    nac: NacInfo = Field(default_factory=NacInfo, description="The NAC treatment: applied or not, Born charges used")
    engine: EngineInfo = Field(description="Force engine that made the forces, and its provenance")

    temperatures_K: list[float] = Field(default_factory=list, description="Temperatures of the thermal properties, K")
    thermal: by_temperature(ThermalProperties) = Field(
        default_factory=ByTemperature,
        description="Thermal properties keyed by temperature key ('T300', 'T1000'); doc.thermal[300] works too",
    )
    zero_point_energy_meV_per_atom: float | None = Field(default=None, description="Zero-point energy in meV/atom")
    mesh: list[int] | None = Field(default=None, description="Γ-centred q-mesh of the thermal properties and DOS")
    mesh_length_A: float | None = Field(default=None, description="Length l (Å) of the mesh rule N_i = max(1, nint(l |b_i|))")
    cutoff_frequency_THz: float | None = Field(
        default=None, description="Modes at or below this frequency (THz) are left out of the thermal properties"
    )

    min_frequency_THz: float | None = Field(default=None, description="Lowest frequency on band path and mesh, THz")
    min_frequency_band_THz: float | None = Field(default=None, description="Lowest frequency on the band path, THz")
    min_frequency_mesh_THz: float | None = Field(default=None, description="Lowest frequency on the q-mesh, THz")
    dynamically_stable: bool | None = Field(
        default=None, description="True when min_frequency_THz >= stability_tolerance_THz"
    )
    stability_tolerance_THz: float | None = Field(default=None, description="Stability threshold in THz (e.g. -0.5)")
    most_negative_mode: PhononMode | None = Field(default=None, description="Where the lowest frequency is")

    enthalpy_per_atom_eV: float | None = Field(
        default=None, description="Energy/enthalpy per atom (eV/atom) of the structure, for polymorph ranking"
    )

    band_structure: PhononBandStructure | None = Field(default=None, description="Dispersion (data store)")
    dos: PhononDos | None = Field(default=None, description="Total DOS (data store)")
    force_constants: ForceConstantsData | None = Field(default=None, description="Force constants (data store)")
    phonopy_yaml: str | None = Field(
        default=None, description="phonopy_params.yaml text: cell, displacements, forces, NAC (data store)"
    )

    structure_hash: str | None = Field(default=None, description="sha256 of the unit cell (rounded)")
    settings_hash: str | None = Field(default=None, description="sha256 of the settings that change the result")
    settings: dict = Field(default_factory=dict, description="Phonon settings used (mesh length, cutoff, ...)")
    errors: list[str] = Field(default_factory=list, description="Problems met; a failed document says why here")
    failed: bool = Field(default=False, description="True when force constants, thermal properties or stability are missing")
