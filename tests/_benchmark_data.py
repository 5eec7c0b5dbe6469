"""Phonon documents for the benchmark tests, built with real phonopy from the shared NaCl DFT
force sets. An "MLIP" is imitated by scaling the DFT force constants by ``scale``: every
frequency then scales by exactly sqrt(scale), which gives error metrics known in closed form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NACL = ("dft-phonons", "NaCl")
TEMPERATURES = (300.0, 1000.0)


def nacl_phonopy(shared_data: Path, scale: float = 1.0):
    import phonopy

    folder = shared_data.joinpath(*NACL)
    ph = phonopy.load(
        folder / "phonopy_disp.yaml", force_sets_filename=folder / "FORCE_SETS", is_nac=False, produce_fc=True,
        log_level=0,
    )
    ph.force_constants = ph.force_constants * scale
    return ph


def band_dict(ph, npoints: int = 15) -> dict:
    """Band structure in the PhononDoc layout: concatenated segments, phonopy's labels."""
    ph.auto_band_structure(npoints=npoints)
    bs = ph.band_structure
    return {
        "qpoints": np.concatenate(bs.qpoints).tolist(),
        "distances": np.concatenate(bs.distances).tolist(),
        "frequencies": np.concatenate(bs.frequencies).tolist(),
        "labels": [s.replace("$\\mathrm{", "").replace("}$", "").replace("$\\Gamma$", "Γ") for s in bs.labels],
        "path_connections": list(bs.path_connections),
        "segment_nqpoints": [len(q) for q in bs.qpoints],
    }


def thermal_dict(ph, temperatures=TEMPERATURES, mesh=(6, 6, 6)) -> dict:
    """A_vib (meV/atom), C_v and S (J/(K·mol) per mole of atoms) keyed by "300"-style keys."""
    from phonopy.physical_units import get_physical_units

    ph.run_mesh(list(mesh), is_gamma_center=True)
    ph.run_thermal_properties(temperatures=list(temperatures), cutoff_frequency=0.1)
    tp = ph.thermal_properties
    n = len(ph.primitive)
    ev_to_kjmol = get_physical_units().EvTokJmol
    out = {}
    for t, fe, s, cv in zip(tp.temperatures, tp.free_energy, tp.entropy, tp.heat_capacity):
        out[str(int(t))] = {
            "temperature_K": float(t),
            "A_vib_meV_per_atom": float(fe) * 1000.0 / ev_to_kjmol / n,
            "Cv_J_per_K_mol": float(cv) / n,
            "S_J_per_K_mol": float(s) / n,
        }
    return out


def engine(kind: str) -> dict:
    if kind == "mlip":
        return {"name": "mace", "kind": "mlip", "version": "0.3.16", "model_sha256": "0123456789abcdef" * 4}
    return {"name": "chgnet", "kind": "reference", "version": "0.3.0"}


def si_structure():
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])


def as_phonon_doc(d: dict):
    """The dict as a real PhononDoc."""
    from phonon_flows.schemas.phonon import PhononDoc

    return PhononDoc.model_validate(d)


def phonon_doc(material_id: str, ph, kind: str, enthalpy: float | None = -3.4, formula: str = "NaCl",
               with_bands: bool = True) -> dict:
    from pymatgen.core import Structure

    uc = ph.unitcell
    structure = Structure(uc.cell, uc.symbols, uc.scaled_positions)
    bands = band_dict(ph) if with_bands else None
    if bands is not None:
        bands["segment_labels"] = []
    thermal = thermal_dict(ph)
    fmin = float(np.min(ph.mesh.frequencies))
    if bands is not None:
        fmin = min(fmin, float(np.min(bands["frequencies"])))
    return {
        "material_id": material_id,
        "formula": formula,
        "chemsys": "-".join(sorted(structure.composition.chemical_system.split("-"))),
        "structure": structure,
        "engine": engine(kind),
        "thermal": thermal,
        "min_frequency_THz": fmin,
        "dynamically_stable": fmin >= -0.5,
        "stability_tolerance_THz": -0.5,
        "enthalpy_per_atom_eV": enthalpy,
        "band_structure": bands,
        "failed": False,
        "errors": [],
    }


def synthetic_doc(material_id: str, kind: str, formula: str, min_freq: float, a_vib: dict, enthalpy=None,
                  failed: bool = False) -> dict:
    """A summary document without band structure (as a store listing without the data store)."""
    return {
        "material_id": material_id,
        "formula": formula,
        "chemsys": "Si",
        "structure": si_structure(),
        "engine": engine(kind),
        "thermal": {
            t: {"temperature_K": float(t), "A_vib_meV_per_atom": a, "Cv_J_per_K_mol": 24.0 + 0.01 * a,
                "S_J_per_K_mol": 40.0 - 0.1 * a}
            for t, a in a_vib.items()
        },
        "min_frequency_THz": min_freq,
        "dynamically_stable": min_freq >= -0.5,
        "stability_tolerance_THz": -0.5,
        "enthalpy_per_atom_eV": enthalpy,
        "band_structure": None,
        "failed": failed,
        "errors": ["phonon: NaN forces from mace"] if failed else [],
    }
