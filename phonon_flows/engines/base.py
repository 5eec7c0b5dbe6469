"""One interface for every force engine: VASP settings aside, anything that turns structures
into energies, forces and stresses (reference potentials, trained MACE)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from phonon_flows.errors import CalculationError, UnsupportedElementsError
from phonon_flows.schemas.common import EngineInfo

#: forces above this (eV/Å) on a structure near equilibrium mean a broken calculation
MAX_SANE_FORCE = 1.0e3


@dataclass
class ForceResult:
    """Energy (eV), forces (N, 3) in eV/Å, stress (6, Voigt xx yy zz yz xz xy) in eV/Å^3 or None."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None = None
    #: a committee model's members' forces, ``(k, n_atoms, 3)`` eV/Å (``forces`` is their mean)
    member_forces: np.ndarray | None = None


class ForceEngine(ABC):
    """A force engine. Subclasses implement :meth:`_compute` for a list of ASE Atoms."""

    #: elements the engine has parameters for; None means "all"
    supported_elements: frozenset[str] | None = None

    @property
    @abstractmethod
    def info(self) -> EngineInfo:
        """Engine name, kind and settings, written into every document it makes."""

    @abstractmethod
    def _compute(self, atoms_list: Sequence[Atoms]) -> list[ForceResult]:
        """Energies, forces and stresses of each structure."""

    def check_elements(self, symbols: Iterable[str], material_id: str | None = None) -> None:
        if self.supported_elements is None:
            return
        missing = sorted(set(symbols) - set(self.supported_elements))
        if missing:
            raise UnsupportedElementsError(
                f"engine {self.info.name} has no parameters for element(s) {', '.join(missing)}",
                material_id=material_id,
            )

    def compute(self, atoms_list: Sequence[Atoms], material_id: str | None = None) -> list[ForceResult]:
        """Compute and check: raises CalculationError on NaN or absurd forces."""
        for atoms in atoms_list:
            self.check_elements(atoms.get_chemical_symbols(), material_id)
        results = self._compute(list(atoms_list))
        for i, res in enumerate(results):
            check_forces(res.forces, material_id=material_id, what=f"structure {i} from {self.info.name}")
        return results


def check_forces(forces: np.ndarray, material_id: str | None = None, what: str = "forces",
                 max_force: float = MAX_SANE_FORCE) -> None:
    """Raise CalculationError if forces contain NaN/inf or exceed ``max_force`` eV/Å."""
    forces = np.asarray(forces, dtype=float)
    if not np.all(np.isfinite(forces)):
        raise CalculationError(f"{what}: NaN or infinite forces", material_id=material_id)
    if forces.size and np.abs(forces).max() > max_force:
        raise CalculationError(
            f"{what}: force of {np.abs(forces).max():.3g} eV/Å exceeds {max_force:g} eV/Å", material_id=material_id
        )
