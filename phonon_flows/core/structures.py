"""Reading, checking and naming input crystal structures.

Every problem is an :class:`~phonon_flows.errors.InputError` that names the material (for a
file that cannot be read: the file) and says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from phonon_flows.errors import InputError, UnsupportedElementsError

#: atoms closer than this (Å) are "overlapping": no real crystal has such bonds
MIN_DISTANCE = 0.5
#: longest cell edge (Å) accepted: beyond it an input is not a crystal to compute phonons of
MAX_CELL_LENGTH = 1000.0


def read_structure(path: str | Path, material_id: str | None = None) -> Structure:
    """Read a periodic crystal structure from any file pymatgen reads (CIF, POSCAR/CONTCAR,
    vasprun.xml, pymatgen JSON, ...), falling back to ASE's readers (extended XYZ, ...).

    Raises :class:`InputError` naming the file (or ``material_id``) when the file is missing,
    empty, unreadable, or holds no periodic structure.
    """
    path = Path(path)
    name = material_id or path.name
    if not path.is_file():
        raise InputError(f"structure file {path} does not exist", material_id=name, stage="input")
    if path.stat().st_size == 0:
        raise InputError(f"structure file {path} is empty", material_id=name, stage="input")

    errors: list[str] = []
    structure: Structure | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = Structure.from_file(path)
        except Exception as exc:  # noqa: BLE001 - any parser failure means "unreadable"
            errors.append(f"pymatgen: {_one_line(exc)}")
        if structure is None:
            structure = _read_with_ase(path, errors)
    if any("Elements in POSCAR cannot be determined" in str(w.message) for w in caught):
        # VASP 4 format: pymatgen would silently call the atoms H, He, ...; ASE (like phonopy)
        # takes the species from the comment line when they are there, else we refuse
        ase_errors: list[str] = []
        structure = _read_with_ase(path, ase_errors, fmt="vasp")
        if structure is None:
            raise InputError(
                f"{path} is a POSCAR without element names (VASP 4 format, no species on the comment line); "
                "add the line of species names",
                material_id=name,
                stage="input",
            )
    if structure is None:
        raise InputError(
            f"cannot read a crystal structure from {path} ({'; '.join(errors)})", material_id=name, stage="input"
        )
    if len(structure) == 0:
        raise InputError(f"structure file {path} holds no atoms", material_id=name, stage="input")
    return structure


def _read_with_ase(path: Path, errors: list[str], fmt: str | None = None) -> Structure | None:
    try:
        import ase.io
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = ase.io.read(path, format=fmt)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"ase: {_one_line(exc)}")
        return None
    if isinstance(atoms, list):  # pragma: no cover - ase.io.read without index returns one
        atoms = atoms[-1]
    try:
        if not all(atoms.pbc) or atoms.cell.rank < 3:
            errors.append("ase: not a periodic 3D structure (no cell or pbc not set)")
            return None
        return AseAtomsAdaptor.get_structure(atoms)
    except Exception as exc:  # noqa: BLE001 - e.g. a singular cell
        errors.append(f"ase: {_one_line(exc)}")
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def validate_structure(
    structure: Any, material_id: str | None = None, min_distance: float = MIN_DISTANCE
) -> Structure:
    """Check that ``structure`` is a usable crystal: a non-empty, ordered (no partial occupancy,
    no vacancies, no dummy species) periodic structure with a finite cell and no two atoms
    closer than ``min_distance`` Å (periodic images included).

    Returns the structure; raises :class:`InputError` naming ``material_id`` otherwise.
    """
    name = material_id or _safe_formula(structure)
    if not isinstance(structure, Structure):
        raise InputError(
            f"expected a periodic crystal structure, got {type(structure).__name__}", material_id=name, stage="input"
        )
    if len(structure) == 0:
        raise InputError("structure has no atoms", material_id=name, stage="input")
    volume = structure.lattice.volume
    if not np.isfinite(volume) or volume < 1e-3:
        raise InputError(f"degenerate lattice (cell volume {volume:.3g} Å^3)", material_id=name, stage="input")
    if not np.all(np.isfinite(structure.cart_coords)):
        raise InputError("non-finite atomic coordinates", material_id=name, stage="input")
    longest = max(structure.lattice.abc)
    if not np.isfinite(longest) or longest > MAX_CELL_LENGTH:
        raise InputError(
            f"cell edge of {longest:.3g} Å, longer than {MAX_CELL_LENGTH:g} Å: not a crystal to compute phonons of",
            material_id=name,
            stage="input",
        )

    disordered = [i for i, site in enumerate(structure) if not site.is_ordered]
    if disordered:
        i = disordered[0]
        occu = ", ".join(f"{sp}:{occ:g}" for sp, occ in structure[i].species.items())
        raise InputError(
            f"disordered or partially occupied structure ({len(disordered)} site(s), e.g. site {i} has {occu}); "
            "order it first (e.g. an ordered supercell)",
            material_id=name,
            stage="input",
        )
    bad = sorted({str(sp) for sp in structure.species if not getattr(sp, "Z", 0)})  # DummySpecies have Z = 0
    if bad:
        raise InputError(f"unknown or dummy species {', '.join(bad)}", material_id=name, stage="input")

    close = closest_pair(structure, min_distance)
    if close is not None:
        i, j, dist = close
        other = "its periodic image" if i == j else f"{j} ({structure[j].specie})"
        raise InputError(
            f"overlapping atoms: sites {i} ({structure[i].specie}) and {other} are "
            f"{dist:.3f} Å apart (< {min_distance:g} Å)",
            material_id=name,
            stage="input",
        )
    return structure


def closest_pair(structure: Structure, cutoff: float) -> tuple[int, int, float] | None:
    """The closest pair of sites (periodic images included) nearer than ``cutoff`` Å, or None.

    Searched in the LLL-reduced cell (same sites, few periodic images) with ASE's neighbour list,
    whose memory does not grow with the cell volume; a lattice vector shorter than ``cutoff``
    (every atom on its own image) is found first, since it would make the search explode.
    """
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    try:
        reduced = structure.lattice.get_lll_reduced_lattice()
    except Exception:  # noqa: BLE001 - keep the cell as given
        reduced = structure.lattice
    shortest = float(min(reduced.abc))
    if shortest < cutoff:
        return 0, 0, shortest
    frac = reduced.get_fractional_coords(structure.cart_coords) % 1.0
    atoms = Atoms(numbers=np.ones(len(structure), dtype=int), scaled_positions=frac, cell=reduced.matrix, pbc=True)
    centers, neighbors, distances = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
    if len(distances) == 0:
        return None
    k = int(np.argmin(distances))
    return int(centers[k]), int(neighbors[k]), float(distances[k])


def _safe_formula(structure: Any) -> str | None:
    try:
        return structure.composition.reduced_formula
    except Exception:  # noqa: BLE001
        return None


def _primitive_standard(structure: Structure, symprec: float = 0.01) -> Structure:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return SpacegroupAnalyzer(structure, symprec=symprec).get_primitive_standard_structure()
    except Exception:  # noqa: BLE001 - spglib may fail on odd inputs: hash the input then
        return structure


def _structure_fingerprint(structure: Structure, length_decimals: int, frac_decimals: int) -> dict[str, Any]:
    abc = [round(float(x), length_decimals) for x in structure.lattice.abc]
    angles = [round(float(x), length_decimals) for x in structure.lattice.angles]
    sites = sorted(
        (str(site.specie), *(round(float(x) % 1.0, frac_decimals) % 1.0 for x in site.frac_coords))
        for site in structure
    )
    return {"abc": abc, "angles": angles, "sites": sites}


def material_id_for(structure: Structure, symprec: float = 0.01) -> str:
    """A stable, readable id: reduced formula + 8 hex digits of a hash of the primitive standard
    structure (lattice to 0.01 Å / 0.01°, fractional coordinates to 0.001), e.g. ``NaCl-1f0e3a9b``.

    The same crystal given in another setting (conventional or primitive cell) gets the same id.
    """
    prim = _primitive_standard(structure, symprec=symprec)
    fp = _structure_fingerprint(prim, length_decimals=2, frac_decimals=3)
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    return f"{structure.composition.reduced_formula}-{digest[:8]}"


def structure_hash(structure: Structure, settings: dict | None = None) -> str:
    """sha256 (hex) of the exact structure (lattice and Cartesian coordinates to 1e-6 Å, species)
    and of ``settings`` (any JSON-serialisable mapping): equal inputs of a calculation hash equal."""
    payload = {
        "lattice": np.round(structure.lattice.matrix, 6).tolist(),
        "species": [str(site.specie) for site in structure],
        "coords": np.round(structure.cart_coords, 6).tolist(),
        "settings": settings or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def check_elements(structure: Structure, supported: frozenset[str] | set[str] | None, engine: str,
                   material_id: str | None = None) -> None:
    """Raise :class:`~phonon_flows.errors.UnsupportedElementsError` when ``structure`` holds
    elements outside ``supported`` (None means every element)."""
    if supported is None:
        return
    missing = sorted({el.symbol for el in structure.composition.elements} - set(supported))
    if missing:
        raise UnsupportedElementsError(
            f"engine {engine} has no parameters for element(s) {', '.join(missing)}",
            material_id=material_id or structure.composition.reduced_formula,
            stage="input",
        )


def unique_material_id(material_id: str, taken: set[str]) -> str:
    """``material_id``, or ``material_id-2``, ``-3``... when it is already in ``taken``."""
    if material_id not in taken:
        return material_id
    k = 2
    while f"{material_id}-{k}" in taken:
        k += 1
    return f"{material_id}-{k}"


def primitive_cell(structure: Structure) -> Structure:
    """The primitive cell (pymatgen's ``get_primitive_structure``), or the input when it is one."""
    prim = structure.get_primitive_structure()
    return prim if len(prim) < len(structure) else structure


#: StructureMatcher tolerances for "the same material" (pymatgen's defaults, volume not rescaled)
MATCHER_KWARGS: dict[str, Any] = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0, "primitive_cell": True, "scale": False}


def find_duplicates(materials: Sequence[tuple[str, Structure]], **matcher_kwargs: Any) -> dict[str, str]:
    """``{material id: id of the first material it duplicates}`` among ``materials`` (in order).

    Two materials are the same when their primitive standard structures hash equal
    (:func:`~phonon_flows.core.structures.material_id_for`) or pymatgen's ``StructureMatcher``
    (:data:`MATCHER_KWARGS`, volume not rescaled) maps one onto the other.
    """
    matcher = StructureMatcher(**{**MATCHER_KWARGS, **matcher_kwargs})
    kept: dict[str, list[tuple[str, Structure]]] = {}  # reduced formula -> first of each crystal
    by_hash: dict[str, str] = {}
    dups: dict[str, str] = {}
    for mid, s in materials:
        try:
            h = material_id_for(s)
        except Exception:  # noqa: BLE001 - fall back on the matcher alone
            h = None
        if h is not None and h in by_hash:
            dups[mid] = by_hash[h]
            continue
        group = kept.setdefault(s.composition.reduced_formula, [])
        first = None
        for other_id, other in group:
            try:
                if matcher.fit(other, s):
                    first = other_id
                    break
            except Exception:  # noqa: BLE001 - a matcher failure means "not shown equal"
                continue
        if first is not None:
            dups[mid] = first
            continue
        group.append((mid, s))
        if h is not None:
            by_hash[h] = mid
    return dups


def duplicate_reason(first: str, source: str | None = None) -> str:
    """The reason given for a material refused as a duplicate of ``first``."""
    where = f" ({source})" if source else ""
    return f"duplicate of {first}{where}: the same crystal structure is given twice; it is computed once"


def as_pymatgen_structure(structure: Any) -> Structure:
    """A pymatgen Structure from a Structure, its dict, or ASE Atoms."""
    if isinstance(structure, Structure):
        return structure
    if isinstance(structure, dict):
        return Structure.from_dict(structure)
    if isinstance(structure, Atoms):
        return AseAtomsAdaptor.get_structure(structure)
    raise InputError(f"expected a pymatgen Structure or ASE Atoms, not {type(structure).__name__}")


def material_name(structure: Structure, material_id: str | None = None) -> str:
    """``material_id`` when given, else :func:`material_id_for` (the reduced formula when that fails)."""
    if material_id:
        return material_id
    try:
        return material_id_for(structure)
    except Exception:  # noqa: BLE001 - a name is only a name
        return structure.composition.reduced_formula


def _first_shells(structure: Structure, tolerance: float, cutoff: float):
    """Each site with its first shell: the neighbours within ``tolerance`` times its shortest bond
    (``cutoff`` Å at most; an empty list for a site with none)."""
    for site, found in zip(structure, structure.get_all_neighbors(cutoff), strict=True):
        if not found:
            yield site, []
            continue
        shortest = min(n.nn_distance for n in found)
        yield site, [n for n in found if n.nn_distance <= tolerance * shortest]


def local_environments(structure: Structure, tolerance: float = 1.15, cutoff: float = 5.0,
                       neighbours: bool = False) -> set[tuple]:
    """The local environments of a crystal as ``(element, coordination number)`` pairs: each site's
    neighbours within ``tolerance`` times its shortest bond (``cutoff`` Å at most). Zinc blende ZnS
    gives ``{("Zn", 4), ("S", 4)}``, rock salt NaCl ``{("Na", 6), ("Cl", 6)}``. With
    ``neighbours=True`` each pair also names the neighbours' elements (``("Zn", 4, "S")``): the
    bond environment, so that tetrahedral Ag-I and tetrahedral Ag-Br are told apart."""
    out: set[tuple] = set()
    for site, shell in _first_shells(structure, tolerance, cutoff):
        if not shell:
            out.add((site.specie.symbol, 0, "") if neighbours else (site.specie.symbol, 0))
        elif neighbours:
            out.add((site.specie.symbol, len(shell), ",".join(sorted({n.specie.symbol for n in shell}))))
        else:
            out.add((site.specie.symbol, len(shell)))
    return out


def bonded_pairs(structure: Structure, tolerance: float = 1.15, cutoff: float = 5.0) -> set[tuple[str, str]]:
    """The element pairs bonded in a crystal, alphabetically ordered: a site and the neighbours of
    its first shell (as in :func:`local_environments`). Zinc blende ZnS gives ``{("S", "Zn")}``,
    LiZnPS4 ``{("Li", "S"), ("P", "S"), ("S", "Zn")}``: a model trained on LiZnPS4 has seen Zn-S bonds,
    one trained on ZnO and CdS has not. A geometric criterion: a contact within the tolerance counts
    whatever its chemistry (Na6ZnS4 also gives Na-Na and Na-Zn)."""
    return {tuple(sorted((site.specie.symbol, n.specie.symbol)))  # type: ignore[misc]
            for site, shell in _first_shells(structure, tolerance, cutoff) for n in shell}
