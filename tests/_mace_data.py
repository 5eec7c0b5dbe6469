"""A small MACE training set labelled by ASE's EMT (a reference engine, not DFT): randomly
perturbed 32-atom fcc Cu and Al supercells, every atom displaced by 0.01-0.05 Å as in the recipe.
Built with ase directly so that the training tests do not depend on the training-data stage."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from ase import Atoms

LATTICE = {"Cu": 3.61, "Al": 4.05}


def fcc_supercell(element: str) -> Atoms:
    from ase.build import bulk

    return bulk(element, "fcc", a=LATTICE[element], cubic=True).repeat((2, 2, 2))


def perturbed(atoms: Atoms, rng: np.random.Generator, amplitude=(0.01, 0.05)) -> Atoms:
    out = atoms.copy()
    direction = rng.normal(size=(len(out), 3))
    direction /= np.linalg.norm(direction, axis=1)[:, None]
    out.positions += direction * rng.uniform(*amplitude, size=(len(out), 1))
    return out


def label_emt(atoms: Atoms, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress") -> Atoms:
    from ase.calculators.emt import EMT

    out = atoms.copy()
    out.calc = EMT()
    energy, forces, stress = out.get_potential_energy(), out.get_forces(), out.get_stress()
    out.calc = None
    out.info[energy_key] = float(energy)
    out.info[stress_key] = np.asarray(stress)
    out.arrays[forces_key] = np.asarray(forces)
    return out


def emt_structures(elements=("Cu", "Al"), n_per_element: int = 8, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [label_emt(perturbed(fcc_supercell(el), rng)) for el in elements for _ in range(n_per_element)]


def to_xyz(atoms_list) -> str:
    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, list(atoms_list), format="extxyz")
    return buf.getvalue()


def training_set_dict(atoms_list, material_ids=None, energy_key="REF_energy", forces_key="REF_forces") -> dict:
    """The fields of a TrainingSetDoc the training job reads."""
    xyz = to_xyz(atoms_list)
    return {
        "xyz": xyz,
        "xyz_sha256": hashlib.sha256(xyz.encode()).hexdigest(),
        "energy_key": energy_key,
        "forces_key": forces_key,
        "stress_key": "REF_stress",
        "n_structures": len(atoms_list),
        "material_ids": list(material_ids or sorted({a.get_chemical_formula(mode="reduce") for a in atoms_list})),
    }
