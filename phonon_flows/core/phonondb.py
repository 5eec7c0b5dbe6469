"""Togo's phonon database (phonondb, version 2018-04-17: VASP, PBEsol, CC-BY-4.0) as DFT
references and DFT training data.

An entry is distributed as ``<name>.tar.lzma`` that unpacks to a folder ``mp-<id>-20180417/``
holding ``POSCAR-unitcell`` (the relaxed unit cell), ``phonopy.conf`` (``DIM``: the supercell
matrix as 3 or 9 numbers, and ``PRIMITIVE_AXIS``), ``FORCE_SETS`` (phonopy's type-I force sets:
the DFT forces of each finite-displacement supercell) and, for insulators, ``BORN``. Either form
is read here (the archive in memory, without unpacking it to disk).

What an entry gives:

- the DFT phonons: a Phonopy object with force constants produced as ``phonopy.load`` does
  (:func:`load_phonondb_entry`, returning the :class:`~phonon_flows.core.phonopy_io.ImportedPhonopy`
  of every phonopy import);
- the DFT training data: its finite-displacement supercells with their DFT forces
  (:func:`finite_displacement_supercells`);
- harmonic DFT labels of any small displacement ``u`` of its supercell: ``F = -Φ u`` and
  ``E = ½ uᵀ Φ u`` from the DFT force constants (:func:`harmonic_labels`), exact to second order.

phonondb has no total energies: energies here are harmonic energies relative to the undisplaced
(relaxed) supercell.
"""

from __future__ import annotations

import re
import tarfile
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from phonopy import Phonopy
from phonopy.file_IO import parse_BORN_from_strings, parse_FORCE_SETS_from_strings
from phonopy.interface.vasp import read_vasp_from_strings
from phonopy.structure.atoms import PhonopyAtoms
from pymatgen.core import Structure

from phonon_flows.core.phonons import (
    DEFAULT_SYMPREC,
    dataset_type,
    n_displacements,
    produce_force_constants,
    set_nac_params,
    to_structure,
)
from phonon_flows.core.phonopy_io import ImportedPhonopy
from phonon_flows.core.phonopy_symmetry import fast_phonopy_symmetry
from phonon_flows.errors import InputError, PhononFlowsError

PHONONDB_NAME = "phonondb"
PHONONDB_VERSION = "2018-04-17"
PHONONDB_LICENSE = "CC-BY-4.0"
#: the credit whatever ships phonondb files, or numbers computed from them, must give
PHONONDB_ATTRIBUTION = "A. Togo, phonondb (Kyoto University), CC-BY-4.0"
PHONONDB_CODE = "VASP"
PHONONDB_XC = "PBEsol"
#: the files an unpacked entry must have, and the optional Born charges file
REQUIRED_FILES = ("POSCAR-unitcell", "phonopy.conf", "FORCE_SETS")
ARCHIVE_SUFFIX = ".tar.lzma"

_MP_ID = re.compile(r"(?:mp-|materials-id-)(\d+)")


@dataclass
class PhonondbEntry:
    """The files of one phonondb entry, read (not yet turned into force constants)."""

    name: str
    source: Path
    mp_id: str | None
    unitcell: PhonopyAtoms
    supercell_matrix: np.ndarray
    primitive_matrix: np.ndarray | str | None
    force_sets: dict
    born_text: str | None
    files: list[str] = field(default_factory=list)

    @property
    def formula(self) -> str:
        return to_structure(self.unitcell).composition.reduced_formula

    @property
    def provenance(self) -> str:
        """Where the numbers come from, with the credit the license asks for."""
        mp = f", {self.mp_id}" if self.mp_id else ""
        return f"{PHONONDB_NAME} {PHONONDB_VERSION}{mp} ({self.source.name}); {PHONONDB_ATTRIBUTION}"


def entry_name(path: str | Path) -> str:
    """The name of an entry: the archive's file name without ``.tar.lzma``, or the folder's name."""
    name = Path(path).name
    return name[: -len(ARCHIVE_SUFFIX)] if name.endswith(ARCHIVE_SUFFIX) else name


def is_phonondb_entry(path: str | Path) -> bool:
    """Whether ``path`` is a phonondb archive or an unpacked entry folder (by its files)."""
    path = Path(path)
    if path.is_file():
        return path.name.endswith(ARCHIVE_SUFFIX)
    if not path.is_dir():
        return False
    if all((path / f).is_file() for f in REQUIRED_FILES):
        return True
    # an archive unpacked as distributed: one folder mp-<id>-20180417/ inside
    inner = [p for p in path.iterdir() if p.is_dir()]
    return len(inner) == 1 and all((inner[0] / f).is_file() for f in REQUIRED_FILES) and not list_phonondb_entries(path)


def list_phonondb_entries(folder: str | Path) -> list[Path]:
    """The phonondb entries of a folder (archives and unpacked entry folders), sorted by name."""
    folder = Path(folder)
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.endswith(ARCHIVE_SUFFIX):
            out.append(p)
        elif p.is_dir() and all((p / f).is_file() for f in REQUIRED_FILES):
            out.append(p)
    return out


def mp_id_of(name: str) -> str | None:
    """``mp-1000`` from ``materials-id-1000-bate-fm-3m-225`` or ``mp-1000-20180417``."""
    m = _MP_ID.search(name)
    return f"mp-{m.group(1)}" if m else None


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _read_archive(path: Path) -> dict[str, str]:
    """The text of each file of a ``.tar.lzma`` entry (by base name), read in memory."""
    texts: dict[str, str] = {}
    try:
        with tarfile.open(path, mode="r:xz") as tar:  # lzma reads both .xz and legacy .lzma streams
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                base = Path(member.name).name
                if base in (*REQUIRED_FILES, "BORN"):
                    handle = tar.extractfile(member)
                    texts[base] = handle.read().decode("utf-8", errors="replace") if handle else ""
    except Exception as exc:  # noqa: BLE001 - tarfile.TarError, lzma.LZMAError, EOFError, OSError
        raise InputError(f"cannot unpack {path.name}: {type(exc).__name__}: {exc}") from exc
    return texts


def _read_folder(path: Path) -> dict[str, str]:
    if not all((path / f).is_file() for f in REQUIRED_FILES):
        inner = [p for p in path.iterdir() if p.is_dir()]
        if len(inner) == 1:
            path = inner[0]
    texts = {}
    for name in (*REQUIRED_FILES, "BORN"):
        if (path / name).is_file():
            texts[name] = (path / name).read_text(errors="replace")
    return texts


def _numbers(text: str, key: str) -> list[Fraction] | None:
    """The numbers of ``KEY = ...`` in phonopy.conf (fractions such as 1/2 allowed)."""
    for line in text.splitlines():
        line = line.split("#")[0]
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        if k.strip().upper() == key:
            return [Fraction(t) for t in v.split()]
    return None


def parse_phonopy_conf(text: str) -> tuple[np.ndarray, np.ndarray | str | None]:
    """``(supercell_matrix 3x3 int, primitive_matrix)`` of a phonopy.conf: the primitive matrix is
    3x3, ``"auto"``, or None without PRIMITIVE_AXIS (phonopy's default: the unit cell)."""
    try:
        dim = _numbers(text, "DIM")
        if re.search(r"(?im)^\s*PRIMITIVE_AXIS\s*=\s*auto\s*$", text):
            return _dim_matrix(dim), "auto"
        axis = _numbers(text, "PRIMITIVE_AXIS")
    except (ValueError, ZeroDivisionError) as exc:
        raise InputError(f"phonopy.conf: unreadable number: {exc}") from exc
    smat = _dim_matrix(dim)
    if axis is None:
        pmat: np.ndarray | str | None = None
    elif len(axis) == 9:
        pmat = np.array([float(x) for x in axis]).reshape(3, 3)
    else:
        raise InputError(f"phonopy.conf: PRIMITIVE_AXIS has {len(axis)} numbers, expected 9")
    return smat, pmat


def _dim_matrix(dim: list[Fraction] | None) -> np.ndarray:
    if dim is None:
        raise InputError("phonopy.conf has no DIM (supercell matrix)")
    if len(dim) == 3:
        smat = np.diag([float(x) for x in dim])
    elif len(dim) == 9:
        smat = np.array([float(x) for x in dim]).reshape(3, 3)
    else:
        raise InputError(f"phonopy.conf: DIM has {len(dim)} numbers, expected 3 or 9")
    if not np.allclose(smat, np.rint(smat)) or abs(np.linalg.det(smat)) < 0.5:
        raise InputError(f"phonopy.conf: DIM {smat.tolist()} is not a non-singular integer matrix")
    return np.rint(smat).astype(int)


def read_phonondb_entry(path: str | Path) -> PhonondbEntry:
    """Read one phonondb entry (``.tar.lzma`` or unpacked folder). Raises :class:`InputError`
    naming the entry and what is wrong."""
    path = Path(path)
    name = entry_name(path)
    try:
        if path.is_file() and path.name.endswith(ARCHIVE_SUFFIX):
            texts = _read_archive(path)
        elif path.is_dir():
            texts = _read_folder(path)
        else:
            raise InputError(f"not a phonondb entry ({ARCHIVE_SUFFIX} archive or folder): {path}")
        missing = [f for f in REQUIRED_FILES if f not in texts]
        if missing:
            raise InputError(f"missing {', '.join(missing)}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                unitcell = read_vasp_from_strings(texts["POSCAR-unitcell"])
        except Exception as exc:  # noqa: BLE001 - phonopy's POSCAR reader raises many kinds
            raise InputError(f"cannot read POSCAR-unitcell: {type(exc).__name__}: {exc}") from exc
        smat, pmat = parse_phonopy_conf(texts["phonopy.conf"])
        natom = int(round(abs(np.linalg.det(smat)))) * len(unitcell)
        try:
            fs = parse_FORCE_SETS_from_strings(texts["FORCE_SETS"], natom=natom)
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                f"cannot read FORCE_SETS for a supercell of {natom} atoms: {type(exc).__name__}: {exc}"
            ) from exc
        if dataset_type(fs) != "type-I" or n_displacements(fs) == 0:
            raise InputError("FORCE_SETS holds no finite displacements")
        if any(a.get("forces") is None or np.shape(a["forces"]) != (natom, 3) for a in fs["first_atoms"]):
            raise InputError(f"FORCE_SETS lacks forces on the {natom} atoms of some supercell")
    except PhononFlowsError as exc:
        raise InputError(exc.reason, material_id=name, stage="import") from exc
    files = [f for f in (*REQUIRED_FILES, "BORN") if f in texts]
    return PhonondbEntry(
        name=name, source=path, mp_id=mp_id_of(name), unitcell=unitcell, supercell_matrix=smat,
        primitive_matrix=pmat, force_sets=fs, born_text=texts.get("BORN"), files=files,
    )


def phonondb_phonopy(entry: PhonondbEntry, use_born: bool = True, symprec: float = DEFAULT_SYMPREC) -> Phonopy:
    """The entry's Phonopy object with its DFT force constants (and Born charges when asked and
    present), as ``phonopy.load`` makes it from the same files."""
    try:
        with warnings.catch_warnings(), fast_phonopy_symmetry():  # phonopy's symmetry setup, vectorised
            warnings.simplefilter("ignore")
            ph = Phonopy(entry.unitcell.copy(), supercell_matrix=entry.supercell_matrix,
                         primitive_matrix=entry.primitive_matrix, symprec=symprec)
        if len(ph.supercell) != len(entry.force_sets["first_atoms"][0]["forces"]):
            raise InputError("FORCE_SETS does not match the supercell of DIM")
        if use_born and entry.born_text:
            _set_born(ph, entry.born_text, symprec)
        ph.dataset = entry.force_sets
        produce_force_constants(ph, "finite-difference")
    except PhononFlowsError as exc:
        raise type(exc)(exc.reason, material_id=entry.name, stage="import") from exc
    except Exception as exc:  # noqa: BLE001 - phonopy's cell / symmetry errors
        raise InputError(f"{type(exc).__name__}: {exc}", material_id=entry.name, stage="import") from exc
    return ph


def phonopy_reference(
    entry: PhonondbEntry, unitcell: PhonopyAtoms | None = None, symprec: float = 1e-5, distance: float = 0.01
) -> tuple[Phonopy, list[tuple[int, list[float]]]]:
    """The entry's Phonopy object with its DFT force constants made by phonopy's own API alone
    (finite differences of FORCE_SETS, then phonopy's symmetrization), and the displacements
    phonopy generates for its supercell as (atom, displacement in Å) pairs. The yardstick of
    :func:`~phonon_flows.core.phonopy_symmetry.fast_phonopy_symmetry`: call it inside that block
    to get the vectorised numbers, outside it to get phonopy's. ``unitcell`` replaces the
    entry's (e.g. a perturbed copy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph = Phonopy(unitcell or entry.unitcell.copy(), supercell_matrix=entry.supercell_matrix,
                     primitive_matrix=entry.primitive_matrix, symprec=symprec)
        ph.generate_displacements(distance=distance)
        displacements = [(int(d["number"]), np.asarray(d["displacement"]).tolist())
                         for d in ph.dataset["first_atoms"]]
        ph.dataset = entry.force_sets
        ph.produce_force_constants(calculate_full_force_constants=False, show_drift=False)
        ph.symmetrize_force_constants(show_drift=False)
    return ph, displacements


def _set_born(ph: Phonopy, text: str, symprec: float) -> None:
    """Born charges and dielectric tensor of a BORN file's text (symmetrized as phonopy.load does)."""
    try:
        params = parse_BORN_from_strings(text, ph.primitive, symprec=symprec)
    except Exception as exc:  # noqa: BLE001 - phonopy raises several kinds here
        raise InputError(f"cannot read BORN: {type(exc).__name__}: {exc}") from exc
    set_nac_params(ph, nac_params=params, symprec=symprec)


def load_phonondb_entry(
    path: str | Path, use_born: bool = True, symprec: float = DEFAULT_SYMPREC
) -> tuple[ImportedPhonopy, PhonondbEntry]:
    """An entry as the :class:`~phonon_flows.core.phonopy_io.ImportedPhonopy` of every phonopy
    import (the Phonopy object with its DFT force constants), and the entry itself."""
    entry = read_phonondb_entry(path)
    ph = phonondb_phonopy(entry, use_born=use_born, symprec=symprec)
    distances = [float(np.linalg.norm(a["displacement"])) for a in entry.force_sets["first_atoms"]]
    imported = ImportedPhonopy(
        phonon=ph, directory=Path(path), files=list(entry.files), fc_method="finite-difference",
        dataset_type="type-I", n_displacements=n_displacements(entry.force_sets), calculator="vasp",
        displacement_distance=max(distances), has_nac=ph.nac_params is not None,
        nac_source="BORN file" if ph.nac_params is not None else None,
    )
    return imported, entry


# --------------------------------------------------------------------------------------------
# DFT training data and harmonic DFT labels
# --------------------------------------------------------------------------------------------
def supercell_structure(ph: Phonopy) -> Structure:
    """The undisplaced supercell of the entry (the one of DIM), as a pymatgen Structure."""
    return to_structure(ph.supercell)


def finite_displacement_supercells(ph: Phonopy, force_sets: dict) -> list[tuple[Structure, np.ndarray, np.ndarray]]:
    """``[(displaced supercell, DFT forces (N, 3) eV/Å, displacements (N, 3) Å)]`` of the entry's
    finite-displacement supercells (one displaced atom each)."""
    sc = ph.supercell
    lattice = np.array(sc.cell)
    out = []
    for a in force_sets["first_atoms"]:
        u = np.zeros((len(sc), 3))
        u[a["number"]] = a["displacement"]
        cart = np.array(sc.positions) + u
        s = Structure(lattice, list(sc.symbols), cart, coords_are_cartesian=True)
        out.append((s, np.asarray(a["forces"], dtype=float), u))
    return out


def full_force_constants(ph: Phonopy) -> np.ndarray:
    """The full (N, N, 3, 3) force constants of the supercell, eV/Å² (from phonopy's compact form)."""
    fc = np.asarray(ph.force_constants)
    n = len(ph.supercell)
    if fc.shape[0] == n:
        return fc
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    return compact_fc_to_full_fc(ph.primitive, fc)


def supercell_displacements(
    ph: Phonopy, structure: Structure, material: str, tolerance: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """``(u, order)``: displacements ``u`` (N, 3, Å) of ``structure`` from the entry's supercell,
    in the supercell's atom order, and ``order[i]``, the supercell atom of the structure's atom i. Raises :class:`InputError` naming ``material`` when ``structure`` is
    not a displaced copy of that supercell: another lattice, other atoms, or an atom farther than
    ``tolerance`` Å from every site of its element."""
    sc = ph.supercell
    ref_lat = np.array(sc.cell)
    lat = np.array(structure.lattice.matrix)
    n = len(sc)
    if len(structure) != n:
        raise InputError(f"structure has {len(structure)} atoms, the phonondb supercell has {n}: "
                         "not a displaced copy of the entry's supercell", material_id=material, stage="label")
    # the same lattice: each lattice vector of one is an integer combination of the other's
    t = np.linalg.solve(ref_lat.T, lat.T).T
    if not np.allclose(t, np.rint(t), atol=1e-4) or abs(abs(np.linalg.det(np.rint(t))) - 1) > 1e-6 \
            or not np.allclose(np.rint(t) @ ref_lat, lat, atol=1e-3):
        raise InputError("its lattice is not the lattice of the phonondb supercell (DIM): not a displaced copy "
                         "of the entry's supercell", material_id=material, stage="label")
    ref_frac = np.array(sc.scaled_positions)
    frac = np.linalg.solve(ref_lat.T, np.array(structure.cart_coords).T).T
    symbols = list(sc.symbols)
    species = [site.specie.symbol for site in structure]
    order = np.full(n, -1)
    u = np.zeros((n, 3))
    taken = np.zeros(n, dtype=bool)
    for i in range(n):
        d = frac[i] - ref_frac
        d -= np.rint(d)
        dist = np.linalg.norm(d @ ref_lat, axis=1)
        cand = [j for j in np.argsort(dist) if symbols[j] == species[i] and not taken[j]]
        if not cand or dist[cand[0]] > tolerance:
            raise InputError(f"atom {i} ({species[i]}) is {float(dist[cand[0]]) if cand else float('inf'):.3f} Å from "
                             f"every free {species[i]} site of the phonondb supercell: not a small displacement of the "
                             "entry's supercell", material_id=material, stage="label")
        j = cand[0]
        taken[j] = True
        order[i] = j
        u[j] = d[j] @ ref_lat
    return u, order


def harmonic_labels(full_fc: np.ndarray, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Harmonic energy ``½ uᵀ Φ u`` (eV) and forces ``-Φ u`` (N, 3, eV/Å) of displacements ``u``."""
    n = len(u)
    phi = full_fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    flat = u.reshape(-1)
    f = -(phi @ flat)
    return float(0.5 * flat @ phi @ flat), f.reshape(n, 3)
