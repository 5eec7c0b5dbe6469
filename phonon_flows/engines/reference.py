"""Reference engines for machines without DFT: pretrained CHGNet 0.3.0 (weights ship in the
``chgnet`` wheel) and ASE's EMT (fast, a few metals; for tests).

Their results stand in for DFT and are marked ``kind="reference"`` everywhere; they are **not** DFT.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import GPa
from pymatgen.core import Element, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from threadpoolctl import threadpool_limits

from phonon_flows.engines.base import ForceEngine, ForceResult, check_forces
from phonon_flows.engines.harmonic import HARMONIC_DFT_NAME, HarmonicDftEngine
from phonon_flows.errors import CalculationError
from phonon_flows.schemas.common import EngineInfo

CHGNET_MODEL = "0.3.0"
#: CHGNet 0.3.0 embeds atomic numbers 1..94 (checked against the model in the tests)
CHGNET_MAX_Z = 94


class ReferenceEngine(ForceEngine):
    """A reference potential with an ASE calculator (for relaxations)."""

    name: str = "reference"

    def calculator(self):
        """An ASE calculator computing energy, forces and stress with this engine."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# EMT
# --------------------------------------------------------------------------------------------
def emt_elements() -> frozenset[str]:
    """Elements ASE's EMT has parameters for."""
    from ase.calculators.emt import parameters

    return frozenset(parameters)


class EmtEngine(ReferenceEngine):
    """ASE's effective-medium theory: fast and crude, Al Cu Ag Au Ni Pd Pt (and H C N O). For tests."""

    name = "emt"

    def __init__(self, device: str | None = None, batch_size: int | None = None):
        # device and batch_size are accepted for a uniform interface; EMT runs on the CPU, one by one
        self.supported_elements = emt_elements()

    @property
    def info(self) -> EngineInfo:
        import ase

        return EngineInfo(
            name="emt",
            kind="reference",
            version=ase.__version__,
            settings={"calculator": "ase.calculators.emt.EMT"},
            provenance="ASE effective-medium theory (reference stand-in for DFT, NOT DFT)",
        )

    def calculator(self):
        from ase.calculators.emt import EMT

        return EMT()

    def _compute(self, atoms_list: Sequence[Atoms]) -> list[ForceResult]:
        results = []
        for atoms in atoms_list:
            atoms = atoms.copy()
            atoms.calc = self.calculator()
            results.append(
                ForceResult(
                    energy=float(atoms.get_potential_energy()),
                    forces=np.array(atoms.get_forces()),
                    stress=np.array(atoms.get_stress(voigt=True)),
                )
            )
        return results


# --------------------------------------------------------------------------------------------
# CHGNet
# --------------------------------------------------------------------------------------------
def chgnet_elements(max_z: int = CHGNET_MAX_Z) -> frozenset[str]:
    """Elements CHGNet 0.3.0 embeds (atomic numbers 1..94)."""
    return frozenset(Element.from_Z(z).symbol for z in range(1, max_z + 1))


def resolve_device(device: str | None) -> str:
    """``auto``/None -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


_MODEL_LOCK = threading.Lock()


@cache
def _load_chgnet(model_name: str, device: str):
    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):
        model = CHGNet.load(model_name=model_name, use_device=device, verbose=False)
    model.eval()
    return model


@cache
def _chgnet_weights_sha256(model_name: str) -> str | None:
    import chgnet

    folder = Path(chgnet.__file__).parent / "pretrained" / model_name
    files = sorted(folder.glob("*.pth.tar")) if folder.is_dir() else []
    if not files:
        return None
    return hashlib.sha256(files[0].read_bytes()).hexdigest()


class ChgnetEngine(ReferenceEngine):
    """Pretrained CHGNet (default 0.3.0, weights in the chgnet wheel, no network), batched.

    ``device``: auto (cuda when available), cpu or cuda. ``batch_size``: structures per batch.
    """

    name = "chgnet"

    def __init__(self, model_name: str = CHGNET_MODEL, device: str | None = "auto", batch_size: int = 16):
        self.model_name = model_name
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        with _MODEL_LOCK:
            self.model = _load_chgnet(model_name, self.device)
        n_z = int(self.model.atom_embedding.embedding.num_embeddings)
        self.supported_elements = chgnet_elements(n_z)

    @property
    def info(self) -> EngineInfo:
        import chgnet

        return EngineInfo(
            name="chgnet",
            kind="reference",
            version=str(self.model.version or self.model_name),
            settings={"model_name": self.model_name, "chgnet_package": chgnet.__version__, "task": "efs"},
            model_sha256=_chgnet_weights_sha256(self.model_name),
            provenance="CHGNet pretrained universal potential shipped in the chgnet wheel (reference stand-in for DFT, NOT DFT)",
        )

    def calculator(self):
        from chgnet.model.dynamics import CHGNetCalculator

        with contextlib.redirect_stdout(io.StringIO()):
            return CHGNetCalculator(model=self.model, use_device=self.device)

    def _compute(self, atoms_list: Sequence[Atoms]) -> list[ForceResult]:
        structures = [AseAtomsAdaptor.get_structure(a) for a in atoms_list]
        preds = self.model.predict_structure(structures, task="efs", batch_size=self.batch_size)
        if isinstance(preds, dict):
            preds = [preds]
        results = []
        for structure, pred in zip(structures, preds, strict=True):
            n = len(structure)
            energy = float(np.asarray(pred["e"]).reshape(())) * (n if self.model.is_intensive else 1)
            stress = np.asarray(pred["s"], dtype=float).reshape(3, 3) * GPa  # GPa, ASE sign -> eV/Å^3
            results.append(
                ForceResult(
                    energy=energy,
                    forces=np.asarray(pred["f"], dtype=float).reshape(n, 3),
                    stress=full_3x3_to_voigt_6_stress(stress),
                )
            )
        return results


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
REFERENCE_ENGINE_CLASSES = {"chgnet": ChgnetEngine, "emt": EmtEngine, HARMONIC_DFT_NAME: HarmonicDftEngine}


def get_reference_engine(name: str, **kwargs: Any) -> ReferenceEngine:
    """``"chgnet"`` -> :class:`ChgnetEngine` (``model_name``, ``device``, ``batch_size``);
    ``"emt"`` -> :class:`EmtEngine`; ``"harmonic-dft"`` -> :class:`~phonon_flows.engines.harmonic.HarmonicDftEngine`
    (harmonic DFT labels from phonondb: DFT, not a stand-in; ``entries`` or ``folder``)."""
    key = name.lower()
    if key not in REFERENCE_ENGINE_CLASSES:
        raise ValueError(f"unknown reference engine {name!r}; choose one of {sorted(REFERENCE_ENGINE_CLASSES)}")
    return REFERENCE_ENGINE_CLASSES[key](**kwargs)


def reference_engine_elements(name: str) -> frozenset[str]:
    """Elements a reference engine handles, without loading a model."""
    key = name.lower()
    if key == "emt":
        return emt_elements()
    if key == "chgnet":
        return chgnet_elements()
    if key == HARMONIC_DFT_NAME:  # any element phonondb has: the entry decides
        return frozenset(el.symbol for el in Element)
    raise ValueError(f"unknown reference engine {name!r}; choose one of {sorted(REFERENCE_ENGINE_CLASSES)}")


# --------------------------------------------------------------------------------------------
# relaxation
# --------------------------------------------------------------------------------------------
@dataclass
class RelaxResult:
    """Outcome of :func:`relax_structure`. Energies in eV/atom, forces in eV/Å, pressure in GPa."""

    structure: Structure
    energy_per_atom: float
    enthalpy_per_atom: float
    converged: bool
    n_steps: int
    max_force: float
    stress: np.ndarray  # Voigt, eV/Å^3, ASE sign
    pressure: float = 0.0


OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


def relax_structure(
    structure: Structure,
    engine: ReferenceEngine,
    fmax: float = 1e-3,
    steps: int = 1000,
    optimizer: str = "FIRE",
    relax_cell: bool = True,
    fix_symmetry: bool = True,
    pressure: float = 0.0,
    symprec: float = 1e-3,
    material_id: str | None = None,
) -> RelaxResult:
    """Relax positions (and the cell, through ASE's ``FrechetCellFilter``) with a reference engine.

    ``fmax`` (eV/Å) applies to the atomic forces and to the filter's generalised cell forces.
    ``fix_symmetry`` keeps the space group (ASE ``FixSymmetry``), as VASP does with symmetry on.
    The enthalpy is ``E + pressure * V`` per atom (``pressure`` in GPa).
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE, LBFGS

    opt_cls = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}.get(optimizer.upper())
    if opt_cls is None:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    name = material_id or structure.composition.reduced_formula
    engine.check_elements([el.symbol for el in structure.composition.elements], name)

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = engine.calculator()
    if fix_symmetry:
        with contextlib.redirect_stdout(io.StringIO()):
            atoms.set_constraint(FixSymmetry(atoms, symprec=symprec))
    target = FrechetCellFilter(atoms, scalar_pressure=pressure * GPa) if relax_cell else atoms
    # the cell filter does thousands of 3x3 matrix functions: BLAS threads only slow them down
    with (
        contextlib.redirect_stdout(io.StringIO()),
        threadpool_limits(limits=1, user_api="blas"),
        warnings.catch_warnings(),
    ):
        # CHGNet's calculator converts to pymatgen at each step, which warns about FixSymmetry
        warnings.filterwarnings("ignore", message="Only FixAtoms and FixCartesian")
        opt = opt_cls(target, logfile=None)
        converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = atoms.get_forces()
    check_forces(forces, material_id=name, what=f"relaxation with {engine.info.name}")
    energy = float(atoms.get_potential_energy())
    if not np.isfinite(energy):
        raise CalculationError(f"relaxation with {engine.info.name}: energy is not finite", material_id=name)
    n = len(atoms)
    stress = np.array(atoms.get_stress(voigt=True))
    del atoms.constraints
    relaxed = AseAtomsAdaptor.get_structure(atoms)
    relaxed = Structure(relaxed.lattice, relaxed.species, relaxed.frac_coords, site_properties=structure.site_properties or None)
    return RelaxResult(
        structure=relaxed,
        energy_per_atom=energy / n,
        enthalpy_per_atom=(energy + pressure * GPa * atoms.get_volume()) / n,
        converged=converged,
        n_steps=int(opt.nsteps),
        max_force=float(np.linalg.norm(forces, axis=1).max()),
        stress=stress,
        pressure=float(pressure),
    )
