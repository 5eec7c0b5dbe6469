"""Training sets for MACE: labelled structures as ASE Atoms, the extended-XYZ text that
``mace_run_train`` reads (``--energy_key REF_energy --forces_key REF_forces --stress_key REF_stress``),
and the statistics of the paper's Fig. 2 (elements, energy per atom, force components,
volume per atom, density)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

ENERGY_KEY = "REF_energy"
FORCES_KEY = "REF_forces"
STRESS_KEY = "REF_stress"
CONFIG_TYPE = "perturbed"
N_BINS = 50

#: atomic mass unit / Å^3 -> g/cm^3
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


def labelled_atoms(
    structure: Structure,
    energy: float,
    forces: np.ndarray,
    stress: np.ndarray | None = None,
    *,
    material_id: str | None = None,
    config_type: str = CONFIG_TYPE,
    energy_key: str = ENERGY_KEY,
    forces_key: str = FORCES_KEY,
    stress_key: str = STRESS_KEY,
    extra_info: dict | None = None,
) -> Atoms:
    """ASE Atoms carrying the labels under explicit keys (no calculator attached, so ASE does not
    rename them): energy (eV) and stress (3x3 or Voigt 6, eV/Å^3, ASE sign: positive = tensile)
    in ``info``, forces (eV/Å) in ``arrays``; ``config_type`` and ``material_id`` in ``info``."""
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = None
    for key in list(atoms.arrays):
        if key not in ("numbers", "positions"):
            del atoms.arrays[key]  # drop pymatgen site properties: only labels go to the file
    atoms.info = {}
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"forces of shape {forces.shape} for {len(atoms)} atoms")
    atoms.info[energy_key] = float(energy)
    atoms.arrays[forces_key] = forces
    if stress is not None:
        s = np.asarray(stress, dtype=float)
        atoms.info[stress_key] = full_3x3_to_voigt_6_stress(s) if s.shape == (3, 3) else s.reshape(6)
    atoms.info["config_type"] = config_type
    if material_id is not None:
        atoms.info["material_id"] = material_id
    atoms.info.update(extra_info or {})
    return atoms


def write_extxyz(atoms_list: Sequence[Atoms]) -> str:
    """The extended-XYZ text of ``atoms_list`` (what ``mace_run_train --train_file`` reads)."""
    import ase.io

    buffer = io.StringIO()
    ase.io.write(buffer, list(atoms_list), format="extxyz", write_results=False)
    return buffer.getvalue()


def read_extxyz(text: str) -> list[Atoms]:
    """Atoms back from extended-XYZ text."""
    import ase.io

    return ase.io.read(io.StringIO(text), index=":", format="extxyz")


def histogram(values: np.ndarray, unit: str, n_bins: int = N_BINS) -> dict:
    """Range, mean, std and a histogram (``bin_edges``, ``counts``) of ``values``."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        return {"unit": unit, "n": 0, "min": None, "max": None, "mean": None, "std": None, "bin_edges": [], "counts": []}
    counts, edges = np.histogram(v, bins=n_bins)
    return {
        "unit": unit,
        "n": int(v.size),
        "min": float(v.min()),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "bin_edges": edges.tolist(),
        "counts": counts.tolist(),
    }


def density_g_cm3(atoms: Atoms) -> float:
    """Mass density in g/cm^3."""
    return float(atoms.get_masses().sum() / atoms.get_volume() * AMU_PER_A3_TO_G_PER_CM3)


def training_set_statistics(
    atoms_list: Sequence[Atoms],
    energy_key: str = ENERGY_KEY,
    forces_key: str = FORCES_KEY,
    n_bins: int = N_BINS,
) -> dict:
    """The statistics of the paper's Fig. 2 over labelled structures.

    - ``element_counts``: number of materials (``info['material_id']``; each structure counts as
      its own material when absent) containing each element;
    - ``element_atom_counts``: number of atoms of each element over all structures;
    - histograms (see :func:`histogram`) of the energy per atom (eV/atom), the force components
      (eV/Å), the volume per atom (Å^3/atom) and the density (g/cm^3), one value per structure
      (per component for forces).
    """
    materials: dict[str, set[str]] = {}
    atom_counts: Counter[str] = Counter()
    e_per_atom, forces, vol_per_atom, density = [], [], [], []
    for i, atoms in enumerate(atoms_list):
        symbols = atoms.get_chemical_symbols()
        atom_counts.update(symbols)
        mid = str(atoms.info.get("material_id", f"structure-{i}"))
        materials.setdefault(mid, set()).update(symbols)
        n = len(atoms)
        if energy_key in atoms.info and atoms.info[energy_key] is not None:
            e_per_atom.append(float(atoms.info[energy_key]) / n)
        if forces_key in atoms.arrays:
            forces.append(np.asarray(atoms.arrays[forces_key], dtype=float).ravel())
        vol_per_atom.append(atoms.get_volume() / n)
        density.append(density_g_cm3(atoms))
    element_counts: Counter[str] = Counter()
    for symbols in materials.values():
        element_counts.update(symbols)
    return {
        "n_materials": len(materials),
        "n_structures": len(atoms_list),
        "n_atoms": int(sum(len(a) for a in atoms_list)),
        "element_counts": dict(sorted(element_counts.items())),
        "element_atom_counts": dict(sorted(atom_counts.items())),
        "energy_per_atom": histogram(np.array(e_per_atom), "eV/atom", n_bins),
        "force_components": histogram(np.concatenate(forces) if forces else np.array([]), "eV/Å", n_bins),
        "volume_per_atom": histogram(np.array(vol_per_atom), "Å^3/atom", n_bins),
        "density": histogram(np.array(density), "g/cm^3", n_bins),
    }
