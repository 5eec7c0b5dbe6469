"""Harmonic phonons with phonopy: displacements, force constants, bands, DOS, thermal
properties and dynamical stability, with the recipe's settings as defaults.

Plain functions on pymatgen / ASE / phonopy objects; no jobs and no stores.

Conventions
-----------
- Frequencies in THz (imaginary modes as negative numbers, phonopy's convention).
- q-mesh for thermal properties: the paper's N_i = max(1, nint(l * |b_i|)) with l = 75 Å and
  b_i the reciprocal vectors (without 2π) of the primitive cell, Γ-centred. phonopy's own
  ``run_mesh(length)`` uses the same formula (with ``numpy.rint``) but then (i) sets the numbers of
  symmetry-equivalent axes to the larger of them and (ii) may replace the grid by a generalized
  regular grid of the conventional cell; on cells where the two differ, the paper's formula is
  what is applied here, so the mesh numbers are computed here and passed to phonopy as integers.
- Thermal properties: phonopy gives kJ/mol and J/(K mol) per mole of *primitive cells*; they are
  kept so (``..._mol_cell``, the unit of the paper's C_v and S_vib MAEs) and also converted to
  meV/atom and J/(K mol of atoms) by dividing by the number of atoms of the primitive cell.
  Modes at or below the cutoff frequency (0.1 THz) are left out (imaginary ones included).
- NAC: :func:`nac_info` says whether a Phonopy object carries Born charges (then its dynamical
  matrix includes the non-analytical term); :func:`phonopy_from_yaml_text` +
  :func:`apply_nac` rebuild phonons with or without it, for like-for-like comparisons.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from phonopy import Phonopy
from phonopy.physical_units import get_physical_units
from phonopy.structure.atoms import PhonopyAtoms
from pymatgen.core import Structure

from phonon_flows.core.phonopy_symmetry import fast_phonopy_symmetry
from phonon_flows.core.structures import validate_structure
from phonon_flows.core.supercells import choose_supercell_matrix
from phonon_flows.errors import CalculationError, InputError

DEFAULT_DISPLACEMENT = 0.01  # Å
DEFAULT_MESH_LENGTH = 75.0  # Å
DEFAULT_CUTOFF_FREQUENCY = 0.1  # THz
DEFAULT_TEMPERATURES = (300.0, 1000.0)  # K
DEFAULT_STABILITY_TOLERANCE = -0.5  # THz
DEFAULT_BAND_NPOINTS = 101
DEFAULT_SYMPREC = 1e-5
#: force-constant methods: phonopy's finite differences (type-I dataset) or symfc (any dataset)
FC_METHODS = ("finite-difference", "symfc")
#: the forces of the undisplaced supercell (phonopy's ``--fz``) with random displacements: "subtract"
#: them from every displaced supercell's forces where the crystal's symmetry lets an atom carry one
#: (a free internal coordinate), or "ignore" them. symfc fits forces = -FC2 u without a constant, so
#: a structure off the engine's minimum puts F0/u into its force constants (a seeded MACE on
#: phonondb crystals: about 2 THz off finite differences without). Finite
#: displacements need nothing: phonopy's set holds -u for every u (by site symmetry or as a
#: second displacement), and F0 cancels in its fit exactly.
RESIDUAL_FORCES = ("subtract", "ignore")
DEFAULT_RESIDUAL_FORCES = "subtract"
#: random_displacements="auto": this many times symfc's fewest supercells (phonopy's own factor).
#: Fewer is not safe: a factor of 2 put a P4mm Cu3Ag (EMT) 0.24 THz off finite differences and
#: a seeded MACE on some sample-1000 crystals 0.3 THz off (mean over the mesh), against 0.02 with
#: 4; 1 is an exactly determined fit and fails. With 4 the count is about phonopy's finite
#: displacements (30 sample-1000 crystals: 0.98 x, in supercells x atoms): no saving of force calls.
DEFAULT_SNAPSHOT_FACTOR = 4.0

_SEEKPATH_LABELS = {"GAMMA": "Γ", "SIGMA": "Σ", "DELTA": "Δ", "LAMBDA": "Λ"}


# --------------------------------------------------------------------------------------------
# structures
# --------------------------------------------------------------------------------------------
def to_phonopy_atoms(structure: Structure | Atoms | PhonopyAtoms) -> PhonopyAtoms:
    """A PhonopyAtoms from a pymatgen Structure, an ASE Atoms or a PhonopyAtoms."""
    if isinstance(structure, PhonopyAtoms):
        return structure.copy()
    if isinstance(structure, Structure):
        if not structure.is_ordered:
            raise InputError(f"{structure.composition.reduced_formula}: disordered structure, phonons need an ordered cell")
        return PhonopyAtoms(
            symbols=[site.specie.symbol for site in structure],
            cell=structure.lattice.matrix,
            scaled_positions=structure.frac_coords,
        )
    if isinstance(structure, Atoms):
        return PhonopyAtoms(
            symbols=structure.get_chemical_symbols(),
            cell=np.array(structure.cell),
            scaled_positions=structure.get_scaled_positions(wrap=False),
        )
    raise TypeError(f"expected a pymatgen Structure, ASE Atoms or PhonopyAtoms, not {type(structure).__name__}")


def to_ase_atoms(cell: PhonopyAtoms) -> Atoms:
    """An ASE Atoms (periodic) from a PhonopyAtoms."""
    return Atoms(symbols=list(cell.symbols), cell=np.array(cell.cell), scaled_positions=cell.scaled_positions, pbc=True)


def to_structure(cell: PhonopyAtoms) -> Structure:
    """A pymatgen Structure from a PhonopyAtoms."""
    return Structure(np.array(cell.cell), list(cell.symbols), cell.scaled_positions)


def settings_hash(settings: dict[str, Any]) -> str:
    """sha256 of a JSON-serializable settings dictionary (keys sorted)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# phonopy object, displacements, forces, force constants
# --------------------------------------------------------------------------------------------
def make_phonopy(
    structure: Structure | Atoms | PhonopyAtoms,
    supercell_matrix: Sequence[Sequence[int]] | Sequence[int] | np.ndarray,
    primitive_matrix: str | Sequence[Sequence[float]] | np.ndarray | None = "auto",
    symprec: float = DEFAULT_SYMPREC,
) -> Phonopy:
    """A Phonopy object for the unit cell ``structure`` and ``supercell_matrix``.

    ``primitive_matrix="auto"`` lets phonopy find the primitive cell from the symmetry.
    """
    smat = np.array(supercell_matrix, dtype=float)
    if smat.shape == (3,):
        smat = np.diag(smat)
    if smat.shape != (3, 3) or not np.allclose(smat, np.rint(smat)) or abs(np.linalg.det(smat)) < 0.5:
        raise InputError(f"supercell matrix must be a non-singular 3x3 integer matrix, got {smat.tolist()}")
    with warnings.catch_warnings(), fast_phonopy_symmetry():  # phonopy's symmetry setup, vectorised
        warnings.simplefilter("ignore")  # PrimitiveMatrixAutoDefaultWarning: "auto" is what we ask for
        return Phonopy(
            to_phonopy_atoms(structure),
            supercell_matrix=np.rint(smat).astype(int),
            primitive_matrix="auto" if primitive_matrix is None else primitive_matrix,
            symprec=symprec,
        )


def check_random_displacements(number_of_snapshots: Any, snapshot_factor: float = DEFAULT_SNAPSHOT_FACTOR) -> None:
    """InputError unless ``number_of_snapshots`` is None, a positive integer or "auto" and the
    factor is at least 1."""
    ok = number_of_snapshots is None or number_of_snapshots == "auto" or (
        isinstance(number_of_snapshots, (int, np.integer)) and not isinstance(number_of_snapshots, bool)
        and number_of_snapshots > 0)
    if not ok:
        raise InputError(f"random_displacements must be None, a positive integer or 'auto', not {number_of_snapshots!r}")
    if not snapshot_factor >= 1:
        raise InputError(f"snapshot_factor must be at least 1 (an exactly determined fit), not {snapshot_factor!r}")


def generate_displacements(
    phonon: Phonopy,
    distance: float = DEFAULT_DISPLACEMENT,
    number_of_snapshots: int | str | None = None,
    random_seed: int | None = None,
    is_plusminus: str | bool = "auto",
    snapshot_factor: float = DEFAULT_SNAPSHOT_FACTOR,
) -> list[Atoms]:
    """Displaced supercells (ASE Atoms), in the order of ``phonon.dataset``.

    Symmetry-reduced finite displacements of ``distance`` Å by default (type-I dataset); with
    ``number_of_snapshots``, that many supercells with every atom displaced by ``distance`` in a
    random direction (type-II dataset, for symfc), reproducible with ``random_seed``; "auto":
    ``snapshot_factor`` x symfc's fewest supercells for this supercell's symmetry.
    """
    if distance <= 0:
        raise InputError(f"displacement amplitude must be positive, got {distance} Å")
    check_random_displacements(number_of_snapshots, snapshot_factor)
    with fast_phonopy_symmetry():  # site symmetries of the displaced atoms
        phonon.generate_displacements(
            distance=distance,
            is_plusminus=is_plusminus,
            number_of_snapshots=number_of_snapshots,
            random_seed=random_seed,
            number_estimation_factor=snapshot_factor if number_of_snapshots == "auto" else None,
        )
    return [to_ase_atoms(cell) for cell in phonon.supercells_with_displacements]


def phonon_supercell_matrix(
    structure: Structure, supercell_matrix: Any, settings: dict, material_id: str | None
) -> np.ndarray:
    """The supercell matrix given (a diagonal of 3 expanded), or the one chosen in the settings'
    ``min_atoms``-``max_atoms`` window (:func:`~phonon_flows.core.supercells.choose_supercell_matrix`)."""
    if supercell_matrix is not None:
        m = np.asarray(supercell_matrix)
        return np.diag(m) if m.shape == (3,) else m
    return np.asarray(
        choose_supercell_matrix(structure, min_atoms=settings["min_atoms"], max_atoms=settings["max_atoms"],
                                material_id=material_id)
    )


def prepare_displacements(
    structure: Structure, supercell_matrix: Any, settings: dict, material_id: str, nac_params: dict | None
) -> tuple[Phonopy, np.ndarray, list]:
    """Phonopy object with displacements, its supercell matrix, and the displaced supercells (ASE).

    ``settings``: a phonon settings dict (``symprec``, ``displacement``, ``random_displacements``,
    ``random_seed``, ``min_atoms``, ``max_atoms``). Raises InputError for an empty, disordered or
    overlapping structure.
    """
    validate_structure(structure, material_id)  # empty, disordered, overlapping atoms: InputError
    smat = phonon_supercell_matrix(structure, supercell_matrix, settings, material_id)
    phonon = make_phonopy(structure, smat, symprec=settings["symprec"])
    if nac_params:
        set_nac_params(phonon, nac_params=nac_params, symprec=settings["symprec"])
    supercells = generate_displacements(
        phonon,
        distance=settings["displacement"],
        number_of_snapshots=settings.get("random_displacements"),
        random_seed=settings.get("random_seed"),
        snapshot_factor=settings.get("snapshot_factor", DEFAULT_SNAPSHOT_FACTOR),
    )
    return phonon, smat, supercells


def dataset_type(dataset: dict | None) -> str | None:
    """``"type-I"`` (one displaced atom per supercell), ``"type-II"`` (all atoms) or None."""
    if not dataset:
        return None
    if "first_atoms" in dataset:
        return "type-I"
    if "displacements" in dataset:
        return "type-II"
    return None


def n_displacements(dataset: dict | None) -> int:
    """Number of displaced supercells of a phonopy dataset."""
    kind = dataset_type(dataset)
    if kind == "type-I":
        return len(dataset["first_atoms"])
    if kind == "type-II":
        return len(dataset["displacements"])
    return 0


def set_forces(phonon: Phonopy, forces: Sequence[np.ndarray], material_id: str | None = None) -> None:
    """Attach the forces (eV/Å) of the displaced supercells to ``phonon.dataset``, checked."""
    n_expected = n_displacements(phonon.dataset)
    natom = len(phonon.supercell)
    if n_expected == 0:
        raise InputError("no displacements to attach forces to", material_id=material_id, stage="phonon")
    if len(forces) != n_expected:
        raise InputError(
            f"got forces for {len(forces)} displaced supercells, expected {n_expected}",
            material_id=material_id,
            stage="phonon",
        )
    arr = []
    for i, f in enumerate(forces):
        if f is None:
            raise InputError(f"forces of displaced supercell {i + 1} are missing", material_id=material_id, stage="phonon")
        f = np.asarray(f, dtype=float)
        if f.shape != (natom, 3):
            raise InputError(
                f"forces of displaced supercell {i + 1} have shape {f.shape}, expected ({natom}, 3)",
                material_id=material_id,
                stage="phonon",
            )
        if not np.all(np.isfinite(f)):
            raise CalculationError(
                f"forces of displaced supercell {i + 1} contain NaN or inf", material_id=material_id, stage="phonon"
            )
        arr.append(f)
    phonon.forces = np.array(arr)


def residual_forces_allowed(phonon: Phonopy) -> bool:
    """Whether the crystal's symmetry lets any atom carry a force in the undisplaced structure.

    An atom can only if its site symmetry leaves a vector invariant (a free internal coordinate:
    wurtzite's u, rutile's x); the mean of the site-symmetry rotations is the projector onto those
    vectors. Silicon, rock salt, fcc metals, cubic perovskites: False (no force is possible)."""
    sym = phonon.primitive_symmetry
    for i in sym.get_independent_atoms():
        if np.abs(np.mean(np.asarray(sym.get_site_symmetry(int(i)), dtype=float), axis=0)).max() > 1e-8:
            return True
    return False


def residual_supercell(phonon: Phonopy, settings: dict) -> Atoms | None:
    """The undisplaced supercell whose forces are to be subtracted, else None: for random
    displacements (a type-II dataset) with ``settings["residual_forces"]`` "subtract" (the default)
    where :func:`residual_forces_allowed`. Finite displacements never need it (see
    :data:`RESIDUAL_FORCES`)."""
    mode = settings.get("residual_forces", DEFAULT_RESIDUAL_FORCES)
    if mode not in RESIDUAL_FORCES:
        raise InputError(f"residual_forces must be one of {RESIDUAL_FORCES}, got {mode!r}")
    if mode == "subtract" and dataset_type(phonon.dataset) == "type-II" and residual_forces_allowed(phonon):
        return to_ase_atoms(phonon.supercell)
    return None


def subtract_residual_forces(
    forces: Sequence[np.ndarray], residual: np.ndarray | None, material_id: str | None = None
) -> tuple[list[np.ndarray], float | None]:
    """``forces`` minus the undisplaced supercell's forces (phonopy's ``--fz``), and the largest
    residual force on an atom (eV/Å; None without a residual)."""
    if residual is None:
        return list(forces), None
    f0 = np.asarray(residual, dtype=float)
    if not np.all(np.isfinite(f0)):
        raise CalculationError("forces of the undisplaced supercell contain NaN or inf", material_id=material_id,
                               stage="phonon")
    # a missing or misshapen force array is left as it is, for set_forces to name
    out = [f if f is None or np.shape(f) != f0.shape else np.asarray(f, dtype=float) - f0 for f in forces]
    return out, float(np.linalg.norm(f0, axis=1).max())


def map_to_supercell(
    phonon: Phonopy,
    supercell: Structure | Atoms | PhonopyAtoms,
    max_displacement: float = 0.5,
    material_id: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Match the atoms of a displaced supercell to those of ``phonon.supercell``.

    Returns ``(order, displacements)``: ``order[j]`` is the atom of ``supercell`` that sits near
    atom ``j`` of phonopy's supercell, and ``displacements[j]`` its displacement (Å, Cartesian).
    The supercell may list its atoms in any order but must have the same lattice.
    """
    ideal = phonon.supercell
    cell = to_phonopy_atoms(supercell)
    if len(cell) != len(ideal):
        raise InputError(
            f"displaced supercell has {len(cell)} atoms, the supercell matrix gives {len(ideal)}",
            material_id=material_id,
            stage="phonon",
        )
    lat = np.array(ideal.cell)
    if not np.allclose(np.array(cell.cell), lat, atol=1e-3 * max(1.0, np.abs(lat).max())):
        raise InputError(
            "displaced supercell lattice differs from the phonopy supercell (supercell matrix or cell mismatch)",
            material_id=material_id,
            stage="phonon",
        )
    diff = cell.scaled_positions[None, :, :] - ideal.scaled_positions[:, None, :]  # (ideal, given, 3)
    diff -= np.rint(diff)
    dist = np.linalg.norm(diff @ lat, axis=-1)
    order = np.argmin(dist, axis=1)
    if len(set(order.tolist())) != len(order):
        raise InputError(
            "displaced supercell atoms do not match the ideal supercell one to one", material_id=material_id, stage="phonon"
        )
    dmin = dist[np.arange(len(order)), order]
    if dmin.max() > max_displacement:
        raise InputError(
            f"an atom of a displaced supercell is {dmin.max():.3f} Å from any ideal site (> {max_displacement} Å)",
            material_id=material_id,
            stage="phonon",
        )
    symbols_given = np.array(cell.symbols)[order]
    if list(symbols_given) != list(ideal.symbols):
        raise InputError("displaced supercell species differ from the ideal supercell", material_id=material_id, stage="phonon")
    disp = diff[np.arange(len(order)), order] @ lat
    return order, disp


def set_random_displacement_dataset(
    phonon: Phonopy,
    supercells: Sequence[Structure | Atoms | PhonopyAtoms],
    forces: Sequence[np.ndarray],
    material_id: str | None = None,
) -> None:
    """Type-II dataset from supercells with any displacements (e.g. the perturbed training set).

    Atoms may come in any order; they are matched to phonopy's supercell (same lattice needed).
    """
    if len(supercells) != len(forces):
        raise InputError(
            f"{len(supercells)} displaced supercells but {len(forces)} sets of forces",
            material_id=material_id,
            stage="phonon",
        )
    if not supercells:
        raise InputError("no displaced supercells", material_id=material_id, stage="phonon")
    disps, fs = [], []
    for i, (sc, f) in enumerate(zip(supercells, forces, strict=True)):
        order, disp = map_to_supercell(phonon, sc, material_id=material_id)
        f = np.asarray(f, dtype=float)
        if f.shape != (len(order), 3):
            raise InputError(
                f"forces of displaced supercell {i + 1} have shape {f.shape}, expected ({len(order)}, 3)",
                material_id=material_id,
                stage="phonon",
            )
        disps.append(disp)
        fs.append(f[order])
    phonon.dataset = {"displacements": np.array(disps), "forces": np.array(fs)}
    set_forces(phonon, fs, material_id=material_id)


def produce_force_constants(
    phonon: Phonopy, fc_method: str | None = None, material_id: str | None = None
) -> str:
    """Force constants from the dataset's displacements and forces, as ``phonopy.load`` does.

    ``fc_method``: ``"finite-difference"`` (phonopy's traditional least squares on a type-I
    dataset, then symmetrized with the symfc projector like ``phonopy.load``), ``"symfc"``, or
    None for finite differences on type-I data and symfc on type-II data. Returns the method used.
    """
    kind = dataset_type(phonon.dataset)
    if kind is None:
        raise InputError("no displacement dataset", material_id=material_id, stage="phonon")
    forces = phonon.dataset.get("forces") if kind == "type-II" else [d.get("forces") for d in phonon.dataset["first_atoms"]]
    if forces is None or any(f is None for f in forces):
        raise InputError("forces are missing for some displacements", material_id=material_id, stage="phonon")
    method = fc_method or ("symfc" if kind == "type-II" else "finite-difference")
    if method not in FC_METHODS:
        raise InputError(f"unknown force-constant method {method!r}; choose one of {FC_METHODS}", material_id=material_id)
    if method == "finite-difference" and kind == "type-II":
        raise InputError(
            "finite differences need one displaced atom per supercell; use fc_method='symfc' for random displacements",
            material_id=material_id,
            stage="phonon",
        )
    try:
        with fast_phonopy_symmetry():  # site symmetries of the displaced atoms
            if method == "symfc":
                phonon.produce_force_constants(calculate_full_force_constants=False, fc_calculator="symfc",
                                               show_drift=False, fc_calculator_log_level=0)
            else:
                phonon.produce_force_constants(calculate_full_force_constants=False, show_drift=False)
                # phonopy's own (FC_SYMMETRY) symmetrization: same frequencies as the symfc projector
                # to ~1e-7 THz here, at a fraction of a millisecond instead of ~0.2-0.8 s per material
                phonon.symmetrize_force_constants(show_drift=False)
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
        raise CalculationError(f"force constants failed: {exc}", material_id=material_id, stage="phonon") from exc
    if not np.all(np.isfinite(phonon.force_constants)):
        raise CalculationError("force constants contain NaN or inf", material_id=material_id, stage="phonon")
    return method


def set_nac_params(
    phonon: Phonopy,
    born_filename: str | None = None,
    nac_params: dict | None = None,
    symprec: float = DEFAULT_SYMPREC,
) -> None:
    """Non-analytical term correction from a phonopy ``BORN`` file or a ``nac_params`` dict
    (``born`` (natom_primitive, 3, 3), ``dielectric`` (3, 3), optional ``factor``)."""
    if born_filename is not None:
        from phonopy.file_IO import parse_BORN

        try:
            nac_params = parse_BORN(phonon.primitive, symprec=symprec, filename=born_filename)
        except Exception as exc:  # noqa: BLE001 - phonopy raises several kinds here
            raise InputError(f"{born_filename}: cannot read Born charges: {exc}") from exc
    if nac_params is None:
        return
    params = {k: v for k, v in dict(nac_params).items() if k != "source"}  # "source": where they came from
    params["born"] = np.asarray(params["born"], dtype=float)
    params["dielectric"] = np.asarray(params["dielectric"], dtype=float)
    if len(params["born"]) != len(phonon.primitive):
        raise InputError(
            f"{len(params['born'])} Born charges for a primitive cell of {len(phonon.primitive)} atoms"
        )
    if params.get("factor") is None:  # the factor of the calculator's units (VASP: eV, Å), as phonopy.load does
        from phonopy.physical_units import get_calculator_physical_units

        params["factor"] = get_calculator_physical_units(phonon.calculator).nac_factor
    phonon.nac_params = params


def nac_info(phonon: Phonopy, source: str | None = None) -> dict[str, Any]:
    """The NAC treatment of a Phonopy object, as stored in a PhononDoc (``NacInfo``): applied or
    not, and the Born charges (e), dielectric tensor and factor when applied."""
    params = phonon.nac_params
    if params is None:
        return {"applied": False}
    return {
        "applied": True,
        "source": source,
        "born": np.asarray(params["born"], dtype=float).tolist(),
        "dielectric": np.asarray(params["dielectric"], dtype=float).tolist(),
        "factor": None if params.get("factor") is None else float(params["factor"]),
        "method": params.get("method") or "gonze",
    }


def same_nac(a: dict | None, b: dict | None, atol: float = 1e-6) -> bool:
    """True when two NAC treatments (:func:`nac_info` dicts) are the same: both without NAC, or
    both with the same Born charges and dielectric tensor."""
    applied_a = bool(a and a.get("applied"))
    applied_b = bool(b and b.get("applied"))
    if applied_a != applied_b:
        return False
    if not applied_a:
        return True
    try:
        return bool(np.allclose(a["born"], b["born"], atol=atol) and np.allclose(a["dielectric"], b["dielectric"], atol=atol))
    except (KeyError, TypeError, ValueError):
        return False


def nac_params_from_dfpt(
    born_unitcell: Any, epsilon: Any, structure: Structure, supercell_matrix: Any, symprec: float = DEFAULT_SYMPREC
) -> dict[str, Any]:
    """phonopy's ``nac_params`` (Born charges of the primitive cell's atoms, dielectric tensor,
    VASP's factor) from a DFPT run on the unit cell ``structure``: symmetrized and mapped to the
    primitive cell with phonopy's ``symmetrize_borns_and_epsilon``, as ``phonopy-vasp-born`` does."""
    from phonopy.physical_units import get_calculator_physical_units
    from phonopy.structure.symmetry import symmetrize_borns_and_epsilon

    born = np.asarray(born_unitcell, dtype=float)
    eps = np.asarray(epsilon, dtype=float)
    if born.shape != (len(structure), 3, 3) or eps.shape != (3, 3):
        raise InputError(f"Born charges of shape {born.shape} and dielectric tensor of shape {eps.shape} for a "
                         f"unit cell of {len(structure)} atoms")
    phonon = make_phonopy(structure, supercell_matrix, symprec=symprec)
    borns, epsilon_sym = symmetrize_borns_and_epsilon(
        born, eps, phonon.unitcell, primitive_matrix=phonon.primitive_matrix,
        supercell_matrix=phonon.supercell_matrix, symprec=symprec)
    return {"born": np.asarray(borns).tolist(), "dielectric": np.asarray(epsilon_sym).tolist(),
            "factor": float(get_calculator_physical_units("vasp").nac_factor)}


def phonopy_from_yaml_text(text: str, symprec: float = DEFAULT_SYMPREC, fc_method: str | None = None) -> Phonopy:
    """A Phonopy object with force constants from ``phonopy_params.yaml`` text (as a PhononDoc
    stores it): force constants from the file, or produced from its displacements and forces."""
    import io

    from phonopy.interface.phonopy_yaml import PhonopyYaml
    from phonopy.structure.dataset import forces_in_dataset

    phpy = PhonopyYaml()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            phpy.read(io.StringIO(text))
            with fast_phonopy_symmetry():
                phonon = Phonopy(phpy.unitcell, supercell_matrix=phpy.supercell_matrix,
                                 primitive_matrix=phpy.primitive_matrix, symprec=symprec,
                                 calculator=phpy.calculator)
    except Exception as exc:  # noqa: BLE001 - yaml and cell errors of many kinds
        raise InputError(f"cannot read the phonopy data: {type(exc).__name__}: {exc}") from exc
    if phpy.nac_params is not None:
        phonon.nac_params = phpy.nac_params
    if phpy.force_constants is not None:
        phonon.force_constants = phpy.force_constants
    elif phpy.dataset is not None and forces_in_dataset(phpy.dataset):
        phonon.dataset = phpy.dataset
        produce_force_constants(phonon, fc_method)
    else:
        raise InputError("the phonopy data has neither force constants nor forces")
    return phonon


def apply_nac(phonon: Phonopy, nac: dict | None, symprec: float = DEFAULT_SYMPREC) -> None:
    """Set the NAC of ``phonon`` to ``nac`` (a :func:`nac_info` dict, or a phonopy ``nac_params``
    dict); None or ``{"applied": False}`` removes it."""
    if not nac or nac.get("applied") is False:
        phonon.nac_params = None
        return
    params = {"born": nac["born"], "dielectric": nac["dielectric"]}
    if nac.get("factor") is not None:
        params["factor"] = nac["factor"]
    if nac.get("method"):
        params["method"] = nac["method"]
    set_nac_params(phonon, nac_params=params, symprec=symprec)


def phonopy_yaml_text(phonon: Phonopy, force_constants: bool = False) -> str:
    """The ``phonopy_params.yaml`` text of a Phonopy object (structure, dataset with forces, NAC;
    the force constants too when asked or when there are no forces to rebuild them from)."""
    from phonopy.structure.dataset import forces_in_dataset

    with_fc = force_constants or (phonon.force_constants is not None and not forces_in_dataset(phonon.dataset))
    return str(phonon.to_phonopy_yaml(settings={"force_sets": True, "displacements": True, "force_constants": with_fc}))


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------
def mesh_from_length(lattice: np.ndarray | Sequence[Sequence[float]], length: float = DEFAULT_MESH_LENGTH) -> list[int]:
    """q-mesh N_i = max(1, nint(l * |b_i|)), b_i the reciprocal vectors (no 2π) of ``lattice`` (rows).

    nint rounds halves up (like VASP's automatic length mode), phonopy's ``numpy.rint`` rounds
    them to even; the two differ only when l * |b_i| is exactly a half integer.
    """
    if length <= 0:
        raise InputError(f"mesh length must be positive, got {length}")
    rec = np.linalg.inv(np.asarray(lattice, dtype=float)).T  # rows = b_i
    return [max(1, int(math.floor(length * float(np.linalg.norm(b)) + 0.5))) for b in rec]


@dataclass
class BandPath:
    """q-points (reciprocal basis of the primitive cell) along seekpath's high-symmetry path."""

    segments: list[np.ndarray]
    labels: list[str]
    path_connections: list[bool]
    segment_labels: list[tuple[str, str]]


def frequencies_at_cartesian_q(phonon: Phonopy, q_cart: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Frequencies (THz, one row of bands per q-point) at wave vectors given in Cartesian
    coordinates (1/Å without 2π: phonopy's q_cart = q_reduced · inv(A)ᵀ for the primitive cell's
    lattice vectors A as rows). Two Phonopy objects of one crystal in different cell settings
    (phonondb's conventional cell and DIM, the screening's primitive cell and its supercell
    matrix) are compared at the same physical q-points this way."""
    q_reduced = np.asarray(q_cart, dtype=float) @ np.asarray(phonon.primitive.cell, dtype=float).T
    phonon.run_qpoints(q_reduced)
    return np.asarray(phonon.get_qpoints_dict()["frequencies"], dtype=float)


def common_qpoint_frequencies(
    reference: Phonopy, other: Phonopy, mesh: Sequence[int] = (4, 4, 4)
) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (THz) of two Phonopy objects of one crystal at the same physical q-points: a
    Γ-centred ``mesh`` of the reference's primitive reciprocal cell, plus the corners of its
    Brillouin-zone parallelepiped' half (0/½ in each direction). Raises ValueError when the two
    primitive cells hold different numbers of atoms (not the same crystal)."""
    if len(reference.primitive) != len(other.primitive):
        raise ValueError(f"primitive cells of {len(reference.primitive)} and {len(other.primitive)} atoms")
    axes = [np.arange(n) / n for n in mesh]
    grid = np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).T
    corners = np.array([[i, j, k] for i in (0, 0.5) for j in (0, 0.5) for k in (0, 0.5)])
    q_reduced = np.unique(np.round(np.vstack([grid, corners]), 12), axis=0)
    q_cart = q_reduced @ np.linalg.inv(np.asarray(reference.primitive.cell, dtype=float)).T
    return frequencies_at_cartesian_q(reference, q_cart), frequencies_at_cartesian_q(other, q_cart)


def seekpath_band_path(primitive: PhonopyAtoms, npoints: int = DEFAULT_BAND_NPOINTS, symprec: float = DEFAULT_SYMPREC) -> BandPath:
    """seekpath (HPKOT) path of the primitive cell, in the primitive cell's own reciprocal basis.

    Uses ``seekpath.get_path_orig_cell`` so the path is right even when the cell is not in
    seekpath's standard setting (phonopy's ``auto_band_structure`` assumes the standard setting;
    the two agree on standard cells). Segments are sampled at a constant interval, ``npoints``
    on the longest one, like phonopy's ``auto_band_structure``.
    """
    import seekpath
    from phonopy.phonon.band_structure import get_band_qpoints

    cell = (np.array(primitive.cell), primitive.scaled_positions, primitive.numbers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EdgeCaseWarning / SupercellWarning: still a valid path
        res = seekpath.get_path_orig_cell(cell, with_time_reversal=True, symprec=symprec)
    coords = {k: np.array(v, dtype=float) for k, v in res["point_coords"].items()}
    pairs = [tuple(p) for p in res["path"]]
    band_paths = [[coords[a], coords[b]] for a, b in pairs]
    rec_lattice = np.linalg.inv(np.array(primitive.cell))  # columns = b_i
    segments = get_band_qpoints(band_paths, npoints, rec_lattice=rec_lattice)

    def nice(label: str) -> str:
        for key, sym in _SEEKPATH_LABELS.items():
            label = label.replace(key, sym)
        return label

    labels: list[str] = []
    connections: list[bool] = []
    for i, (a, b) in enumerate(pairs):
        connected = i + 1 < len(pairs) and pairs[i + 1][0] == b
        connections.append(connected)
        labels.append(nice(a))
        if not connected:
            labels.append(nice(b))
    return BandPath(segments=segments, labels=labels, path_connections=connections,
                    segment_labels=[(nice(a), nice(b)) for a, b in pairs])


@dataclass
class PhononAnalysis:
    """Everything computed from one Phonopy object with force constants (plain numbers)."""

    natom_primitive: int
    primitive_matrix: list[list[float]]
    supercell_matrix: list[list[int]]
    mesh: list[int]
    mesh_length: float
    cutoff_frequency_THz: float
    stability_tolerance_THz: float
    thermal: list[dict[str, float]]
    zero_point_energy_meV_per_atom: float
    min_frequency_mesh_THz: float
    min_frequency_band_THz: float | None
    min_frequency_THz: float
    dynamically_stable: bool
    most_negative_mode: dict[str, Any]
    band_structure: dict[str, Any] | None
    dos: dict[str, list[float]] | None
    errors: list[str] = field(default_factory=list)


def thermal_properties(
    phonon: Phonopy,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    cutoff_frequency: float = DEFAULT_CUTOFF_FREQUENCY,
) -> tuple[list[dict[str, float]], float]:
    """A_vib (meV/atom), C_v and S_vib (J/(K mol of atoms)) at each temperature, the same per mole
    of primitive cells (phonopy's kJ/mol and J/(K mol)), and the zero-point energy (meV/atom), on
    the mesh already run on ``phonon``."""
    units = get_physical_units()
    natom = len(phonon.primitive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GammaAcousticWarning: reported through min frequencies
        tp = phonon.run_thermal_properties(temperatures=list(temperatures), cutoff_frequency=cutoff_frequency)
    to_mev_per_atom = 1000.0 / units.EvTokJmol / natom
    rows = [
        {
            "temperature_K": float(t),
            "A_vib_meV_per_atom": float(fe) * to_mev_per_atom,
            "Cv_J_per_K_mol": float(cv) / natom,
            "S_J_per_K_mol": float(s) / natom,
            "Cv_J_per_K_mol_cell": float(cv),
            "S_J_per_K_mol_cell": float(s),
            "A_vib_kJ_per_mol_cell": float(fe),
        }
        for t, fe, s, cv in zip(tp.temperatures, tp.free_energy, tp.entropy, tp.heat_capacity, strict=True)
    ]
    return rows, float(tp.zero_point_energy) * to_mev_per_atom


def _total_dos(phonon: Phonopy) -> dict[str, list[float]]:
    """phonopy's total density of states (on the mesh already run)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        phonon.run_total_dos()
    return {"frequency_points_THz": phonon.total_dos.frequency_points.tolist(),
            "total_dos": phonon.total_dos.dos.tolist()}


def _band_frequencies(phonon: Phonopy, segments: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """(frequencies (THz), distances) along ``segments`` as phonopy's ``BandStructure`` gives them,
    with the dynamical matrices of all q-points built in one call (phonopy's batched
    ``get_dynamical_matrices_at_qpoints``, which phonopy's band structure calls once per q-point)
    and diagonalised as phonopy does (``numpy.linalg.eigvalsh``): the same numbers. None when the
    dynamical matrix has the non-analytical term (phonopy's own band structure then handles the
    direction of approach to Γ)."""
    from phonopy.harmonic.dynamical_matrix import DynamicalMatrix, DynamicalMatrixNAC, \
        get_dynamical_matrices_at_qpoints

    dm = phonon.dynamical_matrix
    if dm is None or isinstance(dm, DynamicalMatrixNAC) or not isinstance(dm, DynamicalMatrix):
        return None
    qpts = np.ascontiguousarray(np.concatenate([np.asarray(seg, dtype="double") for seg in segments]))
    hermitianize = bool(getattr(dm, "_hermitianize", True))  # as DynamicalMatrix.run passes it (no public getter)
    dms = get_dynamical_matrices_at_qpoints(dm, qpts, is_nac=False, hermitianize=hermitianize, lang=dm.lang)
    eigs = np.linalg.eigvalsh(dms).real
    freqs = np.sqrt(abs(eigs)) * np.sign(eigs) * phonon.unit_conversion_factor
    inv_t = np.linalg.inv(dm.primitive.cell).T
    dists, distance = [], 0.0
    for seg in segments:  # phonopy's BandStructure._shift_point: the distance runs on over the segments
        last = np.asarray(seg[0], dtype="double")
        for q in np.asarray(seg, dtype="double"):
            distance += float(np.linalg.norm(np.dot(q - last, inv_t)))
            last = q
            dists.append(distance)
    return freqs, np.array(dists)


def _band_structure(phonon: Phonopy, path: BandPath) -> tuple[dict[str, Any], dict[str, Any]]:
    """The band structure along ``path`` (as stored in a PhononDoc) and its lowest mode."""
    batched = _band_frequencies(phonon, path.segments)
    if batched is not None:
        qpts = np.concatenate(path.segments)
        freqs, dists = batched
        nq = [len(seg) for seg in path.segments]
    else:
        phonon.run_band_structure(path.segments, path_connections=path.path_connections, labels=path.labels)
        bs = phonon.band_structure
        qpts = np.concatenate(bs.qpoints)
        freqs = np.concatenate(bs.frequencies)
        dists = np.concatenate(bs.distances)
        nq = [len(q) for q in bs.qpoints]
    band = {
        "qpoints": qpts.tolist(),
        "distances": dists.tolist(),
        "frequencies": freqs.tolist(),
        "labels": path.labels,
        "segment_labels": [list(p) for p in path.segment_labels],
        "path_connections": path.path_connections,
        "segment_nqpoints": nq,
    }
    jq, jb = np.unravel_index(int(np.argmin(freqs)), freqs.shape)
    worst = {"qpoint": [float(x) for x in qpts[jq]], "band_index": int(jb),
             "frequency_THz": float(freqs[jq, jb]), "source": "band"}
    return band, worst


def analyze_phonons(
    phonon: Phonopy,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    mesh_length: float = DEFAULT_MESH_LENGTH,
    cutoff_frequency: float = DEFAULT_CUTOFF_FREQUENCY,
    stability_tolerance: float = DEFAULT_STABILITY_TOLERANCE,
    band_npoints: int = DEFAULT_BAND_NPOINTS,
    with_band_structure: bool = True,
    with_dos: bool = True,
    symprec: float = DEFAULT_SYMPREC,
    material_id: str | None = None,
) -> PhononAnalysis:
    """Mesh, thermal properties, total DOS, band structure and dynamical stability.

    A band path seekpath refuses is recorded in ``errors`` (the rest is still computed and the
    stability then rests on the mesh alone).
    """
    if phonon.force_constants is None:
        raise InputError("no force constants", material_id=material_id, stage="phonon")
    temperatures = [float(t) for t in temperatures]
    if not temperatures or min(temperatures) < 0:
        raise InputError(f"temperatures must be a non-empty list of values >= 0 K, got {temperatures}")
    errors: list[str] = []

    mesh = mesh_from_length(phonon.primitive.cell, mesh_length)
    phonon.run_mesh(mesh, is_gamma_center=True)
    mesh_freqs = phonon.mesh.frequencies
    if not np.all(np.isfinite(mesh_freqs)):
        raise CalculationError("phonon frequencies on the mesh are not finite", material_id=material_id, stage="phonon")
    iq, ib = np.unravel_index(int(np.argmin(mesh_freqs)), mesh_freqs.shape)
    min_mesh = float(mesh_freqs[iq, ib])
    worst = {"qpoint": [float(x) for x in phonon.mesh.qpoints[iq]], "band_index": int(ib),
             "frequency_THz": min_mesh, "source": "mesh"}

    thermal, zpe = thermal_properties(phonon, temperatures, cutoff_frequency)

    dos = _total_dos(phonon) if with_dos else None

    band = None
    min_band = None
    if with_band_structure:
        try:
            path = seekpath_band_path(phonon.primitive, band_npoints, symprec=symprec)
        except Exception as exc:  # noqa: BLE001 - seekpath/spglib refusals of all kinds
            errors.append(f"band path: seekpath refused the primitive cell: {type(exc).__name__}: {exc}")
        else:
            band, band_worst = _band_structure(phonon, path)
            min_band = band_worst["frequency_THz"]
            if min_band < min_mesh:
                worst = band_worst

    min_all = min(min_mesh, min_band) if min_band is not None else min_mesh
    return PhononAnalysis(
        natom_primitive=len(phonon.primitive),
        primitive_matrix=np.asarray(phonon.primitive_matrix, dtype=float).tolist(),
        supercell_matrix=np.asarray(phonon.supercell_matrix, dtype=int).tolist(),
        mesh=mesh,
        mesh_length=float(mesh_length),
        cutoff_frequency_THz=float(cutoff_frequency),
        stability_tolerance_THz=float(stability_tolerance),
        thermal=thermal,
        zero_point_energy_meV_per_atom=zpe,
        min_frequency_mesh_THz=min_mesh,
        min_frequency_band_THz=min_band,
        min_frequency_THz=min_all,
        dynamically_stable=bool(min_all >= stability_tolerance),
        most_negative_mode=worst,
        band_structure=band,
        dos=dos,
        errors=errors,
    )
