"""Import phonopy calculation folders (how phonopy's examples and the MDR phonon database ship).

A folder holds one of:

- ``phonopy_params.yaml`` (or ``phonopy.yaml``, ``.xz`` allowed) with the displacement dataset and
  forces (or force constants);
- ``phonopy_disp.yaml`` + ``FORCE_SETS`` (type-I: one displaced atom per supercell, or type-II:
  all atoms displaced, e.g. random displacements);
- ``phonopy_disp.yaml`` + ``FORCE_CONSTANTS``;
- ``phonopy_disp.yaml`` + VASP outputs ``vasprun.xml`` / ``vasprun.xml-001``, ``-002``, ... (one per
  displacement, in order), read with phonopy's VASP interface;

plus ``BORN`` (Born charges and dielectric tensor for the non-analytical term correction) when
present: like ``phonopy.load``, NAC is then applied (``use_born=False`` leaves it out), and
``ImportedPhonopy.nac_source`` records where the charges came from. Errors name the folder.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from phonopy import Phonopy
from phonopy.file_IO import parse_FORCE_CONSTANTS, parse_FORCE_SETS
from phonopy.interface.calculator import get_calc_dataset
from phonopy.interface.phonopy_yaml import PhonopyYaml

from phonon_flows.core.phonons import (
    dataset_type,
    n_displacements,
    produce_force_constants,
    set_forces,
    set_nac_params,
)
from phonon_flows.core.phonopy_symmetry import fast_phonopy_symmetry
from phonon_flows.errors import InputError, PhononFlowsError

PARAMS_FILES = ("phonopy_params.yaml", "phonopy_params.yaml.xz", "phonopy.yaml", "phonopy.yaml.xz")
DISP_FILES = ("phonopy_disp.yaml", "phonopy_disp.yaml.xz")
_VASPRUN = re.compile(r"^vasprun\.xml(-\d+)?(\.(gz|xz|bz2))?$")


@dataclass
class ImportedPhonopy:
    """A Phonopy object with force constants, read from a folder, and where it came from."""

    phonon: Phonopy
    directory: Path
    files: list[str]
    fc_method: str
    dataset_type: str | None
    n_displacements: int
    calculator: str | None
    displacement_distance: float | None
    has_nac: bool
    notes: list[str] = field(default_factory=list)
    #: where the Born charges came from ("phonopy yaml" or "BORN file"), None without NAC
    nac_source: str | None = None


def _first(directory: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def _vasprun_files(directory: Path) -> list[Path]:
    files = [p for p in directory.iterdir() if p.is_file() and _VASPRUN.match(p.name)]

    def key(p: Path) -> int:
        m = re.search(r"-(\d+)", p.name)
        return int(m.group(1)) if m else 0

    return sorted(files, key=key)


def _displacement_distance(dataset: dict | None) -> float | None:
    kind = dataset_type(dataset)
    if kind == "type-I":
        d = [np.linalg.norm(a["displacement"]) for a in dataset["first_atoms"]]
    elif kind == "type-II":
        d = np.linalg.norm(np.asarray(dataset["displacements"]), axis=-1).ravel()
    else:
        return None
    return float(np.max(d)) if len(d) else None


def _check_same_displacements(yaml_dataset: dict | None, fs_dataset: dict, where: str, fs_name: str, yaml_name: str) -> None:
    from phonopy.structure.dataset import get_displacements_and_forces

    if not yaml_dataset or dataset_type(yaml_dataset) is None:
        return
    n_yaml, n_fs = n_displacements(yaml_dataset), n_displacements(fs_dataset)
    if n_fs < n_yaml:
        raise InputError(
            f"{where}: {fs_name} has forces for {n_fs} displaced supercells but {yaml_name} has {n_yaml} "
            f"displacements: forces are missing for displacements {n_fs + 1}..{n_yaml}"
        )
    if n_fs > n_yaml:
        raise InputError(f"{where}: {fs_name} has {n_fs} force sets but {yaml_name} has only {n_yaml} displacements")
    d_yaml = get_displacements_and_forces(yaml_dataset)[0]
    d_fs = get_displacements_and_forces(fs_dataset)[0]
    if d_yaml.shape != d_fs.shape or not np.allclose(d_yaml, d_fs, atol=1e-6):
        raise InputError(f"{where}: the displacements in {fs_name} do not match those in {yaml_name}")


def load_phonopy_folder(
    directory: str | Path,
    primitive_matrix: str | list | None = None,
    fc_method: str | None = None,
    symprec: float = 1e-5,
    use_born: bool = True,
) -> ImportedPhonopy:
    """Read a phonopy calculation folder into a Phonopy object with force constants.

    ``primitive_matrix`` None keeps the file's primitive matrix (phonopy's own behaviour) and
    falls back to ``"auto"``. ``fc_method`` None: finite differences for type-I data, symfc for
    type-II data (see :func:`phonon_flows.core.phonons.produce_force_constants`).
    Force constants are produced and symmetrized as ``phonopy.load`` does.
    """
    directory = Path(directory)
    where = str(directory)
    if not directory.is_dir():
        raise InputError(f"{where}: not a directory")
    params = _first(directory, PARAMS_FILES)
    disp = _first(directory, DISP_FILES)
    born = directory / "BORN" if (use_born and (directory / "BORN").is_file()) else None
    force_sets = directory / "FORCE_SETS" if (directory / "FORCE_SETS").is_file() else None
    fc_file = directory / "FORCE_CONSTANTS" if (directory / "FORCE_CONSTANTS").is_file() else None
    vaspruns = _vasprun_files(directory)
    yaml_file = params or disp
    if yaml_file is None:
        raise InputError(f"{where}: no phonopy_params.yaml, phonopy.yaml or phonopy_disp.yaml found")

    ph = _read_phonopy_yaml(yaml_file, primitive_matrix, symprec, use_born, where)
    files = [yaml_file.name]
    notes: list[str] = []
    nac_source = "phonopy yaml" if ph.nac_params is not None else None

    if born is not None and ph.nac_params is None:
        try:
            set_nac_params(ph, born_filename=str(born), symprec=symprec)
        except PhononFlowsError as exc:
            raise InputError(f"{where}: {exc.reason}") from exc
        files.append("BORN")
        nac_source = "BORN file"

    # forces (or force constants): in the yaml, else FORCE_SETS, FORCE_CONSTANTS or vasprun.xml files
    yaml_dataset = ph.dataset
    has_forces = n_displacements(yaml_dataset) > 0 and _forces_complete(yaml_dataset)
    used_fc_method: str
    if ph.force_constants is not None and not has_forces:
        used_fc_method = "imported"
    elif has_forces:
        used_fc_method = _produce(ph, fc_method, where)
    elif force_sets is not None:
        _set_force_sets(ph, force_sets, where, yaml_file.name)
        files.append("FORCE_SETS")
        used_fc_method = _produce(ph, fc_method, where)
    elif fc_file is not None:
        _set_force_constants_file(ph, fc_file, where)
        files.append("FORCE_CONSTANTS")
        used_fc_method = "imported"
    elif vaspruns:
        _set_vasprun_forces(ph, vaspruns, where, yaml_file.name)
        files.extend(p.name for p in vaspruns)
        used_fc_method = _produce(ph, fc_method, where)
    else:
        n = n_displacements(yaml_dataset)
        raise InputError(
            f"{where}: {yaml_file.name} has {n} displacements but no forces: no FORCE_SETS, FORCE_CONSTANTS "
            "or vasprun.xml files found"
        )

    return ImportedPhonopy(
        phonon=ph,
        directory=directory,
        files=files,
        fc_method=used_fc_method,
        dataset_type=dataset_type(ph.dataset),
        n_displacements=n_displacements(ph.dataset),
        calculator=getattr(ph, "calculator", None) or "vasp",
        displacement_distance=_displacement_distance(ph.dataset),
        has_nac=ph.nac_params is not None,
        notes=notes,
        nac_source=nac_source,
    )


def _read_phonopy_yaml(
    yaml_file: Path, primitive_matrix: str | list | None, symprec: float, use_born: bool, where: str
) -> Phonopy:
    """A Phonopy object from a phonopy yaml file: cell, supercell and primitive matrices, and the
    dataset, force constants and NAC parameters it holds.

    The yaml is read here rather than with ``phonopy.load``, which also picks up FORCE_SETS / BORN
    files from the current working directory.
    """
    try:
        with warnings.catch_warnings(), fast_phonopy_symmetry():  # phonopy's symmetry setup, vectorised
            warnings.simplefilter("ignore")
            phpy_yaml = PhonopyYaml()
            phpy_yaml.read(yaml_file)
            if phpy_yaml.unitcell is None:
                raise ValueError("no unit cell in the file")
            smat = phpy_yaml.supercell_matrix
            pmat = primitive_matrix
            if pmat is None:
                pmat = phpy_yaml.primitive_matrix if phpy_yaml.primitive_matrix is not None else "auto"
            ph = Phonopy(
                phpy_yaml.unitcell,
                supercell_matrix=np.eye(3, dtype=int) if smat is None else smat,
                primitive_matrix=pmat,
                symprec=symprec,
                calculator=phpy_yaml.calculator,
                site_mixture_scheme=phpy_yaml.site_mixture_scheme or "merge",
            )
            if use_born and phpy_yaml.nac_params is not None:
                ph.nac_params = phpy_yaml.nac_params
            if phpy_yaml.dataset is not None:
                ph.dataset = phpy_yaml.dataset
            if phpy_yaml.force_constants is not None:
                ph.force_constants = phpy_yaml.force_constants
    except Exception as exc:  # noqa: BLE001 - yaml or cell errors of many kinds
        raise InputError(f"{where}: cannot read {yaml_file.name}: {type(exc).__name__}: {exc}") from exc
    return ph


def _set_force_sets(ph: Phonopy, force_sets: Path, where: str, yaml_name: str) -> None:
    """The dataset of a FORCE_SETS file (same displacements as the yaml's, all forces present)."""
    try:
        fs = parse_FORCE_SETS(force_sets, natom=len(ph.supercell))
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            f"{where}: cannot read FORCE_SETS for a supercell of {len(ph.supercell)} atoms: {type(exc).__name__}: {exc}"
        ) from exc
    _check_same_displacements(ph.dataset, fs, where, "FORCE_SETS", yaml_name)
    if not _forces_complete(fs):
        raise InputError(f"{where}: FORCE_SETS lacks forces for some displacements")
    ph.dataset = fs


def _set_force_constants_file(ph: Phonopy, fc_file: Path, where: str) -> None:
    """The force constants of a FORCE_CONSTANTS file."""
    try:
        fc = parse_FORCE_CONSTANTS(str(fc_file))
        ph.force_constants = fc
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{where}: cannot use FORCE_CONSTANTS: {type(exc).__name__}: {exc}") from exc


def _set_vasprun_forces(ph: Phonopy, vaspruns: list[Path], where: str, yaml_name: str) -> None:
    """The forces of one vasprun.xml per displacement of the yaml (in file order)."""
    n_expected = n_displacements(ph.dataset)
    if n_expected == 0:
        raise InputError(f"{where}: {yaml_name} lists no displacements for the vasprun.xml forces")
    if len(vaspruns) != n_expected:
        raise InputError(
            f"{where}: {len(vaspruns)} vasprun.xml file(s) for {n_expected} displacements in {yaml_name}: "
            "forces are missing for some displacements"
        )
    try:
        calc = get_calc_dataset("vasp", len(ph.supercell), [str(p) for p in vaspruns], verbose=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{where}: cannot read forces from vasprun.xml: {type(exc).__name__}: {exc}") from exc
    if not calc or "forces" not in calc:
        raise InputError(f"{where}: vasprun.xml forces do not match the supercell of {len(ph.supercell)} atoms")
    try:
        set_forces(ph, calc["forces"])
    except PhononFlowsError as exc:
        raise InputError(f"{where}: vasprun.xml: {exc.reason}") from exc


def _forces_complete(dataset: dict | None) -> bool:
    kind = dataset_type(dataset)
    if kind == "type-I":
        return all(a.get("forces") is not None for a in dataset["first_atoms"])
    if kind == "type-II":
        return dataset.get("forces") is not None and len(dataset["forces"]) == len(dataset["displacements"])
    return False


def _produce(ph: Phonopy, fc_method: str | None, where: str) -> str:
    try:
        return produce_force_constants(ph, fc_method=fc_method)
    except PhononFlowsError as exc:
        raise type(exc)(f"{where}: {exc.reason}") from exc
