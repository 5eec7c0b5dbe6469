"""Harmonic DFT labels from phonondb (VASP, PBEsol): ``F = -Φ u`` and ``E = ½ uᵀ Φ u`` for a small
displacement ``u`` of an entry's supercell, from the entry's DFT force constants Φ.

Exact to second order in ``u``: at the recipe's 0.01-0.05 Å these are the DFT forces up to the
anharmonic terms (which the finite-displacement force constants themselves leave out). The labels
are named everywhere as harmonic DFT (PBEsol, phonondb), engine kind ``dft``. A structure that is
not a displaced copy of the material's phonondb supercell (the unit cell repeated by ``DIM``) is
refused with an error naming the material.

The engine is built from a spec (``get_engine("harmonic-dft", entries={material_id: path})`` or
``folder=...``, where material ids are mp ids): each job loads the entries it needs, once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase import Atoms
from pymatgen.io.ase import AseAtomsAdaptor

from phonon_flows.core import phonondb as pdb
from phonon_flows.engines.base import ForceEngine, ForceResult, check_forces
from phonon_flows.errors import InputError
from phonon_flows.schemas.common import EngineInfo

HARMONIC_DFT_NAME = "harmonic-dft"
HARMONIC_DFT_LABEL = f"harmonic DFT ({pdb.PHONONDB_XC}, {pdb.PHONONDB_NAME})"
_LOCK = threading.Lock()


@lru_cache(maxsize=256)
def _entry_model(path: str) -> tuple:
    """(phonopy object, full force constants, entry) of an entry, loaded once per process."""
    imp, entry = pdb.load_phonondb_entry(path, use_born=False)
    return imp.phonon, pdb.full_force_constants(imp.phonon), entry


def harmonic_engine_info() -> EngineInfo:
    """The EngineInfo of harmonic DFT labels."""
    return EngineInfo(
        name=HARMONIC_DFT_NAME,
        kind="dft",
        version=pdb.PHONONDB_VERSION,
        settings={
            "label": HARMONIC_DFT_LABEL, "code": pdb.PHONONDB_CODE, "xc": pdb.PHONONDB_XC,
            "database": pdb.PHONONDB_NAME, "database_version": pdb.PHONONDB_VERSION,
            "license": pdb.PHONONDB_LICENSE, "attribution": pdb.PHONONDB_ATTRIBUTION,
            "labels": "harmonic: F = -Φu, E = ½uᵀΦu from the entry's DFT force constants (finite displacements)",
            "energy": "harmonic energy relative to the undisplaced supercell (phonondb has no total energies)",
        },
        provenance=f"{pdb.PHONONDB_NAME} {pdb.PHONONDB_VERSION}; {pdb.PHONONDB_ATTRIBUTION}",
    )


class HarmonicDftEngine(ForceEngine):
    """Harmonic DFT (PBEsol, phonondb) labels of displaced copies of phonondb supercells.

    ``entries``: material id -> entry (``.tar.lzma`` or unpacked folder); ``folder``: a folder of
    entries, found by mp id (``mp-1000``) or entry name. ``tolerance``: the largest displacement
    (Å) still taken as a displacement of a supercell site.
    """

    name = HARMONIC_DFT_NAME
    #: no total energies: a phonon job records no enthalpy from this engine
    total_energies = False

    def __init__(self, entries: Mapping[str, str] | None = None, folder: str | None = None,
                 tolerance: float = 0.3, device: str | None = None, batch_size: int | None = None):
        self.entries = {str(k): str(v) for k, v in (entries or {}).items()}
        self.folder = folder
        self.tolerance = float(tolerance)
        if folder is not None:
            if not Path(folder).is_dir():
                raise InputError(f"phonondb folder {folder} not found")
            for p in pdb.list_phonondb_entries(folder):
                name = pdb.entry_name(p)
                self.entries.setdefault(pdb.mp_id_of(name) or name, str(p))
                self.entries.setdefault(name, str(p))

    @property
    def info(self) -> EngineInfo:
        return harmonic_engine_info()

    def entry_for(self, material_id: str | None) -> str:
        """The entry of a material, or an error naming it."""
        if material_id is None:
            raise InputError("harmonic DFT labels need the material id of the phonondb entry", stage="label")
        path = self.entries.get(material_id)
        if path is None:
            raise InputError(f"no phonondb entry for this material among the {len(self.entries)} given to the "
                             f"{HARMONIC_DFT_LABEL} engine", material_id=material_id, stage="label")
        return path

    def _compute(self, atoms_list: Sequence[Atoms]) -> list[ForceResult]:
        raise NotImplementedError("harmonic DFT labels need the material: call compute(atoms_list, material_id)")

    def compute(self, atoms_list: Sequence[Atoms], material_id: str | None = None) -> list[ForceResult]:
        path = self.entry_for(material_id)
        with _LOCK:
            ph, fc, entry = _entry_model(path)
        out = []
        for i, atoms in enumerate(atoms_list):
            structure = AseAtomsAdaptor.get_structure(atoms)
            name = f"{material_id} ({entry.mp_id or entry.name}, structure {i})"
            u, order = pdb.supercell_displacements(ph, structure, name, tolerance=self.tolerance)
            energy, forces = pdb.harmonic_labels(fc, u)
            check_forces(forces, material_id=material_id, what=f"structure {i} from {HARMONIC_DFT_LABEL}")
            out.append(ForceResult(energy=energy, forces=forces[order], stress=None))
        return out

