"""The recipe's DFT settings (VASP, PBE, PAW) as atomate2 input-set generators, and parsing of
VASP outputs into :class:`~phonon_flows.schemas.forces.ForceDoc` / ``RelaxDoc``.

The paper's numbers: ENCUT 520 eV, EDIFF 1e-8 eV, force convergence 1e-3 eV/Å (EDIFFG = -1e-3),
KSPACING 0.15 Å^-1; the same INCAR for the relaxation and the single points on the perturbed
supercells. The rest is what a careful phonon calculation needs:

- ``GGA = PE`` (PBE; atomate2's base set is PBEsol), PBE_54 PAW potentials, no +U (``LDAU = False``);
- ``PREC = Accurate``, ``LREAL = False``, ``ADDGRID = True``, ``LASPH = True``: accurate forces;
- ``ISMEAR = 0``, ``SIGMA = 0.05``: Gaussian smearing, safe for metals and insulators alike
  (tetrahedra, ISMEAR -5, give wrong forces for metals);
- ``KGAMMA = True``: Gamma-centred KSPACING mesh; ``ALGO = Normal``, ``NELM = 200``, ``NELMIN = 6``
  to reach EDIFF 1e-8 reliably;
- relaxation: ``IBRION = 2``, ``ISIF = 3``, ``NSW = 200``, ``EDIFFG = -1e-3``; run twice
  (:class:`~phonon_flows.makers.vasp.VaspRelaxMaker`) to remove the Pulay stress of the cell change;
- single points: ``NSW = 0`` (VASP then uses IBRION = -1 and ISIF = 2: stress written), ``ISYM = 0``
  (a perturbed supercell has no symmetry, and VASP must not symmetrise its forces);
- nothing large written: ``LWAVE = LCHARG = LAECHG = LVTOT = False``.

Spin polarisation stays as atomate2 sets it (``ISPIN = 2`` with default initial moments).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase.units import GPa
from atomate2.vasp.sets.core import RelaxSetGenerator, StaticSetGenerator
from pymatgen.core import Structure

from phonon_flows.engines.base import check_forces
from phonon_flows.errors import CalculationError, InputError
from phonon_flows.schemas.common import EngineInfo
from phonon_flows.schemas.forces import ForceDoc, RelaxDoc

ENCUT = 520.0  # eV
EDIFF = 1e-8  # eV
EDIFFG = -1e-3  # eV/Å (negative: force criterion)
KSPACING = 0.15  # Å^-1
POTCAR_FUNCTIONAL = "PBE_54"

#: INCAR settings common to the relaxation and the single points
COMMON_INCAR: dict[str, Any] = {
    "GGA": "PE",
    "PREC": "Accurate",
    "ENCUT": ENCUT,
    "EDIFF": EDIFF,
    "KSPACING": KSPACING,
    "KGAMMA": True,
    "ISMEAR": 0,
    "SIGMA": 0.05,
    "LREAL": False,
    "ADDGRID": True,
    "LASPH": True,
    "ALGO": "Normal",
    "NELM": 200,
    "NELMIN": 6,
    "LDAU": False,
    "LWAVE": False,
    "LCHARG": False,
    "LAECHG": False,
    "LVTOT": False,
    # atomate2's base set is r2SCAN-derived: drop its meta-GGA and output extras (None removes a tag)
    "METAGGA": None,
    "LMIXTAU": None,
    "LELF": None,
    "LORBIT": None,
    "LDAUPRINT": None,
}

#: INCAR of the relaxation (positions and cell)
RELAX_INCAR: dict[str, Any] = {**COMMON_INCAR, "IBRION": 2, "ISIF": 3, "NSW": 200, "EDIFFG": EDIFFG}

#: INCAR of the single points on the perturbed supercells (with NSW = 0, VASP's defaults are
#: IBRION = -1 and ISIF = 2, which computes the stress; pymatgen drops those tags when NSW = 0)
STATIC_INCAR: dict[str, Any] = {**COMMON_INCAR, "NSW": 0, "ISYM": 0}


def incar_settings(kind: str) -> dict[str, Any]:
    """The recipe's INCAR for ``kind`` = ``"relax"`` or ``"static"`` (None values remove a tag)."""
    if kind == "relax":
        return dict(RELAX_INCAR)
    if kind == "static":
        return dict(STATIC_INCAR)
    raise ValueError(f"kind must be 'relax' or 'static', not {kind!r}")


def _written(incar: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in incar.items() if v is not None}


@dataclass
class RecipeRelaxSetGenerator(RelaxSetGenerator):
    """atomate2 relaxation input set with the recipe's INCAR (user_incar_settings still win)."""

    user_potcar_functional: str = POTCAR_FUNCTIONAL
    auto_ismear: bool = False
    auto_kspacing: bool = False

    @property
    def incar_updates(self) -> dict:
        return incar_settings("relax")


@dataclass
class RecipeStaticSetGenerator(StaticSetGenerator):
    """atomate2 single-point input set with the recipe's INCAR (user_incar_settings still win)."""

    user_potcar_functional: str = POTCAR_FUNCTIONAL
    auto_ismear: bool = False
    auto_kspacing: bool = False

    @property
    def incar_updates(self) -> dict:
        return incar_settings("static")


@dataclass
class RecipeBornSetGenerator(StaticSetGenerator):
    """atomate2's DFPT (LEPSILON) input set for Born charges and the dielectric tensor, with the
    recipe's INCAR (PBE, ENCUT 520, EDIFF 1e-8, KSPACING 0.15): atomate2's ``lepsilon`` updates
    (IBRION 8, LEPSILON, LPEAD, NSW 1) on top."""

    lepsilon: bool = True
    user_potcar_functional: str = POTCAR_FUNCTIONAL
    auto_ismear: bool = False
    auto_kspacing: bool = False

    @property
    def incar_updates(self) -> dict:
        return {**COMMON_INCAR, **super().incar_updates, "ENCUT": ENCUT, "EDIFF": EDIFF, "KSPACING": KSPACING}


def vasp_elements() -> frozenset[str]:
    """Elements with a POTCAR in the recipe's VASP input set (PAW PBE)."""
    return frozenset(RecipeStaticSetGenerator().config_dict["POTCAR"])


def vasp_engine_info(
    kind: str = "static", version: str | None = None, incar: dict[str, Any] | None = None,
    provenance: str | None = None,
) -> EngineInfo:
    """EngineInfo of a VASP calculation with the recipe's settings (or ``incar``)."""
    settings = {"incar": _written(incar if incar is not None else incar_settings(kind)),
                "potcar_functional": POTCAR_FUNCTIONAL, "calculation": kind}
    return EngineInfo(name="vasp", kind="dft", version=version, settings=settings, provenance=provenance)


# --------------------------------------------------------------------------------------------
# parsing outputs
# --------------------------------------------------------------------------------------------
def kbar_to_ase_stress(stress_kbar: Any) -> np.ndarray:
    """VASP's stress (kB, 3x3, positive = compressive) -> ASE's (eV/Å^3, positive = tensile)."""
    return -0.1 * GPa * np.asarray(stress_kbar, dtype=float).reshape(3, 3)


def force_doc_from_outputs(
    structure: Structure,
    energy: float,
    forces: Any,
    stress_kbar: Any | None,
    material_id: str,
    perturbation_index: int | None = None,
    engine: EngineInfo | None = None,
    dir_name: str | None = None,
):
    """A ForceDoc from VASP's outputs (energy eV, forces eV/Å, stress kB as VASP writes it)."""
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (len(structure), 3):
        raise CalculationError(
            f"VASP output has forces of shape {forces.shape} for {len(structure)} atoms", material_id=material_id,
            stage="label",
        )
    if energy is None or not np.isfinite(energy):
        raise CalculationError("VASP output has no finite energy", material_id=material_id, stage="label")
    check_forces(forces, material_id=material_id, what="VASP forces")
    stress = None if stress_kbar is None else kbar_to_ase_stress(stress_kbar).tolist()
    n = len(structure)
    return ForceDoc(
        material_id=material_id,
        formula=structure.composition.reduced_formula,
        structure=structure,
        n_atoms=n,
        energy=float(energy),
        energy_per_atom=float(energy) / n,
        forces=forces.tolist(),
        stress=stress,
        max_force=float(np.linalg.norm(forces, axis=1).max()) if n else 0.0,
        engine=engine or vasp_engine_info("static"),
        perturbation_index=perturbation_index,
        dir_name=dir_name,
    )


def read_vasprun(path: str | Path, material_id: str | None = None):
    """pymatgen's Vasprun of ``path`` (no DOS/eigenvalues), or InputError naming the file."""
    from pymatgen.io.vasp import Vasprun

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Vasprun(str(path), parse_dos=False, parse_eigen=False, parse_projected_eigen=False,
                           parse_potcar_file=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot parse {path} as vasprun.xml: {' '.join(str(exc).split())[:200]}",
                         material_id=material_id or path.name, stage="label") from exc


def force_doc_from_vasprun(
    path: str | Path, material_id: str, perturbation_index: int | None = None, require_converged: bool = True
):
    """A ForceDoc from a real ``vasprun.xml``: last ionic step's structure, energy (sigma->0, as
    pymatgen's ``final_energy``), forces and stress (converted to ASE's sign and eV/Å^3).

    The EngineInfo records the VASP version and the INCAR that was actually used.
    Raises CalculationError when the electronic loop did not converge (``require_converged``).
    """
    vr = read_vasprun(path, material_id)
    if require_converged and not vr.converged_electronic:
        raise CalculationError(f"{path}: electronic loop did not converge", material_id=material_id, stage="label")
    step = vr.ionic_steps[-1]
    incar = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in dict(vr.incar).items()}
    engine = vasp_engine_info("static", version=vr.vasp_version, incar=incar, provenance=str(path))
    engine.settings.pop("potcar_functional", None)  # what was used is in the symbols
    engine.settings["potcar_symbols"] = list(vr.potcar_symbols)
    engine.settings["kpoints"] = [list(map(int, k)) for k in vr.kpoints.kpts] if vr.kpoints is not None else None
    return force_doc_from_outputs(
        structure=step["structure"],
        energy=float(vr.final_energy),
        forces=step["forces"],
        stress_kbar=step.get("stress"),
        material_id=material_id,
        perturbation_index=perturbation_index,
        engine=engine,
        dir_name=str(Path(path).parent),
    )


def relax_doc_from_outputs(
    input_structure: Structure,
    structure: Structure,
    energy: float,
    material_id: str,
    forces: Any | None = None,
    n_steps: int | None = None,
    engine: EngineInfo | None = None,
    dir_name: str | None = None,
    pressure_GPa: float = 0.0,
):
    """A RelaxDoc from a VASP relaxation's outputs (final energy in eV) at the target pressure
    ``pressure_GPa`` (VASP's PSTRESS / 10): H = E + PV per atom."""
    if energy is None or not np.isfinite(energy):
        raise CalculationError("VASP relaxation has no finite energy", material_id=material_id, stage="relax")
    n = len(structure)
    pv = float(pressure_GPa) * GPa * structure.volume  # GPa * Å^3 -> eV
    max_force = None
    converged = None
    if forces is not None:
        f = np.asarray(forces, dtype=float)
        max_force = float(np.linalg.norm(f, axis=1).max())
        converged = max_force <= abs(EDIFFG) * 1.0001
    return RelaxDoc(
        material_id=material_id,
        formula=structure.composition.reduced_formula,
        input_structure=input_structure,
        structure=structure,
        energy_per_atom=float(energy) / n,
        enthalpy_per_atom=(float(energy) + pv) / n,
        pressure=float(pressure_GPa),
        converged=converged,
        fmax=abs(EDIFFG),
        max_force=max_force,
        n_steps=n_steps,
        volume_change=structure.volume / input_structure.volume - 1.0,
        engine=engine or vasp_engine_info("relax"),
        dir_name=dir_name,
    )


# --------------------------------------------------------------------------------------------
# why a calculation failed
# --------------------------------------------------------------------------------------------
#: files of a VASP run folder whose last lines say what VASP itself complained about
VASP_LOG_FILES = ("std_err.txt", "vasp.out", "std_out.txt")


def vasp_failure(exc: BaseException, directory: str | Path) -> tuple[str, list[str]]:
    """``(reason, custodian errors)`` of a VASP calculation that raised ``exc`` in ``directory``:
    the exception, the errors custodian's handlers found and corrected (``custodian.json``) and
    the last error lines VASP wrote."""
    import json

    directory = Path(directory)
    parts = [f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"]
    errors: list[str] = []
    log = directory / "custodian.json"
    if log.is_file():
        try:
            runs = json.loads(log.read_text())
            for run in runs if isinstance(runs, list) else [runs]:
                for corr in run.get("corrections", []):
                    errors.extend(str(e) for e in corr.get("errors", []))
        except (ValueError, AttributeError, TypeError):
            parts.append("custodian.json unreadable")
    if errors:
        parts.append(f"custodian found: {', '.join(dict.fromkeys(errors))}")
    for name in VASP_LOG_FILES:
        f = directory / name
        if f.is_file():
            lines = [ln.strip() for ln in f.read_text(errors="replace").splitlines() if ln.strip()]
            bad = [ln for ln in lines if any(w in ln.lower() for w in ("error", "warning", "killed", "abort"))]
            if bad:
                parts.append(f"{name}: {' | '.join(bad[-3:])[:300]}")
    return "; ".join(parts), list(dict.fromkeys(errors))
