"""PhononMaker: structure + force engine -> PhononDoc (harmonic phonons, thermal properties, stability).

Three ways to get forces on the displaced supercells:

- a force engine built inside the job from its spec (``engine="mace"`` with ``model_sha256``,
  ``"chgnet"``, ``"emt"``): all displaced supercells of a material go through the engine in one
  ``compute()`` call (batched for MACE). One job, category ``gpu`` for MACE, ``cpu`` otherwise;
- a force maker (``VaspForceMaker`` or ``ReferenceForceMaker``): one job per displaced supercell,
  then a collecting job, as atomate2's ``run_phonon_displacements`` +
  ``generate_frequencies_eigenvectors`` (the maker returns a Flow);
- imported phonopy data (:func:`import_phonopy`, :func:`import_phonopy_doc`).

Error convention: bad input or a failed calculation of one material (missing or NaN forces,
elements the engine lacks, unreadable model...) does not raise; the job returns a PhononDoc with
``failed=True`` and the reasons in ``errors`` (also logged), so a campaign carries on. A band path
seekpath refuses is listed in ``errors`` without failing the document (the thermal properties
and the mesh stability are still there). Programming errors still raise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import CURRENT_JOB, Flow, Maker, OnMissing, Response, job
from pymatgen.core import Structure

from phonon_flows.core import phonons as ph_core
from phonon_flows.core import phonondb as pdb
from phonon_flows.core.committee import spread_from_member_forces
from phonon_flows.core.phonopy_io import ImportedPhonopy, load_phonopy_folder
from phonon_flows.core.polymorphs import temperature_key
from phonon_flows.core.structures import as_pymatgen_structure, material_name, structure_hash
from phonon_flows import engines  # engines.get_engine is looked up when a job runs (tests replace it)
from phonon_flows.engines import MLIP_ENGINES, engine_category, guess_engine_info
from phonon_flows.engines.base import check_forces
from phonon_flows.makers.base import set_category
from phonon_flows.errors import CalculationError, InputError, PhononFlowsError
from phonon_flows.schemas.common import EngineInfo, get_field
from phonon_flows.schemas.phonon import PHONON_DATA_FIELDS, ForceConstantsData, PhononDoc, ThermalProperties

logger = logging.getLogger(__name__)

IMPORT_ENGINE_NAME = "phonopy-import"


# --------------------------------------------------------------------------------------------
# settings and documents (no science: core does the numbers)
# --------------------------------------------------------------------------------------------
def phonon_settings(
    displacement: float = ph_core.DEFAULT_DISPLACEMENT,
    fc_method: str | None = None,
    random_displacements: int | str | None = None,
    random_seed: int | None = 123,
    temperatures: Sequence[float] = ph_core.DEFAULT_TEMPERATURES,
    mesh_length: float = ph_core.DEFAULT_MESH_LENGTH,
    cutoff_frequency: float = ph_core.DEFAULT_CUTOFF_FREQUENCY,
    stability_tolerance: float = ph_core.DEFAULT_STABILITY_TOLERANCE,
    band_npoints: int = ph_core.DEFAULT_BAND_NPOINTS,
    symprec: float = ph_core.DEFAULT_SYMPREC,
    min_atoms: int = 100,
    max_atoms: int = 200,
    total_dos: bool = True,
    residual_forces: str = ph_core.DEFAULT_RESIDUAL_FORCES,
    snapshot_factor: float = ph_core.DEFAULT_SNAPSHOT_FACTOR,
) -> dict[str, Any]:
    """The settings of a phonon calculation as a plain (JSON) dict, the recipe's by default.

    ``total_dos=False`` leaves the total DOS out of the document (a screening that does not ask
    for it saves the time); the key is only written then, so the settings of a calculation with
    the DOS (and their hashes) are those of before the option existed.

    ``random_displacements``: None (finite displacements), a number of supercells with every atom
    displaced, or "auto": ``snapshot_factor`` times the fewest supercells that determine the
    force constants under the crystal's symmetry (symfc's count, as phonopy's
    ``number_of_snapshots="auto"``).

    ``residual_forces``: with random displacements, "subtract" (default) the undisplaced
    supercell's forces from the displaced ones' where symmetry allows them (phonopy's ``--fz``; one
    more force call for such a crystal), or "ignore" them. Finite displacements need nothing
    (:data:`phonon_flows.core.phonons.RESIDUAL_FORCES`). Only engine paths compute them; forces
    made elsewhere (VASP jobs, imported) are used as given."""
    if residual_forces not in ph_core.RESIDUAL_FORCES:
        raise InputError(f"residual_forces must be one of {ph_core.RESIDUAL_FORCES}, not {residual_forces!r}")
    ph_core.check_random_displacements(random_displacements, snapshot_factor)
    extra = {} if total_dos else {"total_dos": False}
    if random_displacements:  # keys that only act on random displacements: the hashes of the others stay
        extra["residual_forces"] = residual_forces
        if random_displacements == "auto":
            extra["snapshot_factor"] = float(snapshot_factor)
    return {**extra,
        "displacement": float(displacement),
        "fc_method": fc_method,
        "random_displacements": random_displacements,
        "random_seed": random_seed,
        "temperatures": [float(t) for t in temperatures],
        "mesh_length": float(mesh_length),
        "cutoff_frequency": float(cutoff_frequency),
        "stability_tolerance": float(stability_tolerance),
        "band_npoints": int(band_npoints),
        "symprec": float(symprec),
        "min_atoms": int(min_atoms),
        "max_atoms": int(max_atoms),
    }


def _settings_hash(settings: dict, supercell_matrix: Any, engine: EngineInfo) -> str:
    payload = {
        **settings,
        "supercell_matrix": _matrix_or_none(supercell_matrix),
        "engine": engine.model_dump(exclude={"provenance"}),
    }
    return ph_core.settings_hash(payload)


def _matrix_or_none(matrix: Any) -> list[list[int]] | None:
    """A 3x3 integer supercell matrix as lists (a diagonal of 3 is expanded), None if it is not one."""
    try:
        m = np.asarray(matrix, dtype=float)
        m = np.diag(m) if m.shape == (3,) else m
        return np.rint(m).astype(int).tolist() if m.shape == (3, 3) else None
    except (TypeError, ValueError):
        return None


def failed_phonon_doc(
    structure: Structure | None,
    engine: EngineInfo,
    errors: Sequence[str],
    settings: dict[str, Any],
    material_id: str | None = None,
    supercell_matrix: Any = None,
    enthalpy_per_atom: float | None = None,
) -> PhononDoc:
    """A PhononDoc that says why the phonons of this material could not be computed."""
    for err in errors:
        logger.error("phonons of %s failed: %s", material_id, err)
    return PhononDoc(
        material_id=material_id,
        formula=None if structure is None else structure.composition.reduced_formula,
        chemsys=None if structure is None else structure.composition.chemical_system,
        structure=structure,
        supercell_matrix=_matrix_or_none(supercell_matrix),
        displacement_A=settings.get("displacement"),
        fc_method=settings.get("fc_method"),
        engine=engine,
        temperatures_K=list(settings.get("temperatures", [])),
        mesh_length_A=settings.get("mesh_length"),
        cutoff_frequency_THz=settings.get("cutoff_frequency"),
        stability_tolerance_THz=settings.get("stability_tolerance"),
        enthalpy_per_atom_eV=enthalpy_per_atom,
        structure_hash=None if structure is None else structure_hash(structure),
        settings_hash=_settings_hash(settings, supercell_matrix, engine),
        settings=dict(settings),
        errors=list(errors),
        failed=True,
    )


def phonon_doc_from_phonopy(
    phonon,
    structure: Structure,
    engine: EngineInfo,
    settings: dict[str, Any],
    material_id: str | None = None,
    fc_method: str | None = None,
    displacement: float | None = None,
    enthalpy_per_atom: float | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
    errors: Sequence[str] = (),
    nac_source: str | None = None,
    residual_force: float | None = None,
    committee_spread: float | None = None,
) -> PhononDoc:
    """Analyse a Phonopy object with force constants (core) and fill a PhononDoc.

    ``nac_source``: where the Born charges of ``phonon.nac_params`` came from (recorded in
    ``PhononDoc.nac``; "nac_params" when NAC is on and nothing is said). ``residual_force``: the
    largest force (eV/Å) on an atom of the undisplaced supercell, when it was subtracted."""
    a = ph_core.analyze_phonons(
        phonon,
        temperatures=settings["temperatures"],
        mesh_length=settings["mesh_length"],
        cutoff_frequency=settings["cutoff_frequency"],
        stability_tolerance=settings["stability_tolerance"],
        band_npoints=settings["band_npoints"],
        symprec=settings["symprec"],
        with_dos=bool(settings.get("total_dos", True)),
        material_id=material_id,
    )
    all_errors = list(errors) + a.errors
    for err in a.errors:
        logger.warning("phonons of %s: %s", material_id, err)
    fc = None
    if store_force_constants:
        arr = np.asarray(phonon.force_constants)
        fc = ForceConstantsData(force_constants=arr.tolist(), shape=list(arr.shape),
                                p2s_map=[int(i) for i in phonon.primitive.p2s_map])
    return PhononDoc(
        material_id=material_id,
        formula=structure.composition.reduced_formula,
        chemsys=structure.composition.chemical_system,
        structure=structure,
        natom_primitive=a.natom_primitive,
        natom_supercell=len(phonon.supercell),
        supercell_matrix=a.supercell_matrix,
        primitive_matrix=a.primitive_matrix,
        displacement_A=displacement,
        fc_method=fc_method,
        n_displacements=ph_core.n_displacements(phonon.dataset) or None,
        residual_force_max_eV_A=residual_force,
        committee_spread_THz=committee_spread,
        has_nac=phonon.nac_params is not None,
        nac=ph_core.nac_info(phonon, nac_source or "nac_params"),
        engine=engine,
        temperatures_K=[row["temperature_K"] for row in a.thermal],
        thermal={temperature_key(row["temperature_K"]): ThermalProperties(**row) for row in a.thermal},
        zero_point_energy_meV_per_atom=a.zero_point_energy_meV_per_atom,
        mesh=a.mesh,
        mesh_length_A=a.mesh_length,
        cutoff_frequency_THz=a.cutoff_frequency_THz,
        min_frequency_THz=a.min_frequency_THz,
        min_frequency_band_THz=a.min_frequency_band_THz,
        min_frequency_mesh_THz=a.min_frequency_mesh_THz,
        dynamically_stable=a.dynamically_stable,
        stability_tolerance_THz=a.stability_tolerance_THz,
        most_negative_mode=a.most_negative_mode,
        enthalpy_per_atom_eV=enthalpy_per_atom,
        band_structure=a.band_structure,
        dos=a.dos,
        force_constants=fc,
        phonopy_yaml=ph_core.phonopy_yaml_text(phonon) if store_phonopy_yaml else None,
        structure_hash=structure_hash(structure),
        settings_hash=_settings_hash(settings, a.supercell_matrix, engine),
        settings=dict(settings),
        errors=all_errors,
        failed=False,
    )


def with_job_store(engine: str, kwargs: dict) -> dict:
    """Engine kwargs with the running job's store added for an MLIP given by sha256 (so that
    the model is fetched from the store the job writes to, on whichever worker runs it)."""
    if engine.lower() in MLIP_ENGINES and "model_path" not in kwargs and "store" not in kwargs:
        store = getattr(CURRENT_JOB, "store", None)
        if store is not None:
            return {**kwargs, "store": store}
    return kwargs


# --------------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------------
@job(output_schema=PhononDoc, data=list(PHONON_DATA_FIELDS))
def engine_phonons(
    structure: Structure,
    engine: str,
    engine_kwargs: dict | None = None,
    settings: dict | None = None,
    supercell_matrix: Any = None,
    material_id: str | None = None,
    enthalpy_per_atom: float | None = None,
    engine_enthalpy: bool | None = None,
    nac_params: dict | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
) -> PhononDoc:
    """Phonons of one material with a force engine built in the job from its spec.

    All displaced supercells (and, for ``engine_enthalpy``, the unit cell) go through the engine
    in one ``compute()`` call. ``engine_enthalpy`` None: the engine's energy per atom of the unit
    cell is recorded as ``enthalpy_per_atom_eV`` for reference engines, not for MLIPs trained on
    forces only.
    """
    structure = as_pymatgen_structure(structure)
    settings = settings or phonon_settings()
    kwargs = dict(engine_kwargs or {})
    mid = material_name(structure, material_id)
    info = guess_engine_info(engine, kwargs)
    smat = supercell_matrix
    try:
        phonon, smat, supercells = ph_core.prepare_displacements(structure, supercell_matrix, settings, mid, nac_params)
        kwargs = with_job_store(engine, kwargs)
        try:
            eng = engines.get_engine(engine, **kwargs)
        except PhononFlowsError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that cannot be loaded fails this material
            raise InputError(f"cannot build force engine {engine!r}: {type(exc).__name__}: {exc}",
                             material_id=mid, stage="phonon") from exc
        info = eng.info
        with_energy = (engine.lower() not in MLIP_ENGINES and getattr(eng, "total_energies", True)) \
            if engine_enthalpy is None else engine_enthalpy
        atoms_list = list(supercells)
        residual = ph_core.residual_supercell(phonon, settings)
        if residual is not None:
            atoms_list.append(residual)
        n_forces = len(atoms_list)
        if with_energy and enthalpy_per_atom is None:
            atoms_list.append(ph_core.to_ase_atoms(ph_core.to_phonopy_atoms(structure)))
        try:
            results = eng.compute(atoms_list, material_id=mid)
        except PhononFlowsError:
            raise
        except Exception as exc:  # noqa: BLE001 - an engine crash fails this material only
            raise CalculationError(f"force engine {info.name} failed: {type(exc).__name__}: {exc}",
                                   material_id=mid, stage="phonon") from exc
        if len(results) != len(atoms_list):
            raise CalculationError(f"force engine returned {len(results)} results for {len(atoms_list)} structures",
                                   material_id=mid, stage="phonon")
        if len(atoms_list) > n_forces:
            enthalpy_per_atom = float(results[-1].energy) / len(structure)
        forces, f0_max = ph_core.subtract_residual_forces(
            [r.forces for r in results[: len(supercells)]],
            results[len(supercells)].forces if residual is not None else None, material_id=mid)
        ph_core.set_forces(phonon, forces, material_id=mid)
        spread = member_spread(phonon, results[:n_forces], len(supercells), residual is not None, settings, mid)
        return _doc_with_force_constants(phonon, structure, info, settings, mid, settings.get("fc_method"),
                                         enthalpy_per_atom, nac_params, store_force_constants, store_phonopy_yaml,
                                         residual_force=f0_max, committee_spread=spread)
    except PhononFlowsError as exc:
        return failed_phonon_doc(structure, info, [str(exc.with_material(mid, "phonon"))], settings, mid, smat,
                                 enthalpy_per_atom)


@job(data=["supercells"])
def generate_phonon_displacements(
    structure: Structure, settings: dict, supercell_matrix: Any = None, material_id: str | None = None,
    nac_params: dict | None = None,
) -> dict[str, Any]:
    """Displaced supercells (pymatgen Structures, phonopy's atom order) and the supercell matrix."""
    structure = as_pymatgen_structure(structure)
    phonon, smat, supercells = ph_core.prepare_displacements(structure, supercell_matrix, settings, material_name(structure, material_id),
                                        nac_params)
    return {
        "supercells": [ph_core.to_structure(ph_core.to_phonopy_atoms(a)) for a in supercells],
        "supercell_matrix": np.asarray(smat).astype(int).tolist(),
    }


@job
def run_phonon_displacements(supercells: list[Structure], force_maker: Maker, material_id: str | None = None) -> Response:
    """Replace itself with one force job per displaced supercell (as atomate2's job of that name)."""
    import inspect

    takes_id = "material_id" in inspect.signature(force_maker.make).parameters
    jobs = []
    for i, sc in enumerate(supercells):
        j = force_maker.make(sc, material_id=material_id) if takes_id else force_maker.make(sc)
        j.append_name(f" {i + 1}/{len(supercells)}")
        config = getattr(j, "config", None)  # a Job; VaspForceMaker returns a Flow
        if config is None or not (config.manager_config or {}).get("_category"):
            set_category(j, "cpu")  # DFT and reference engines run on CPU workers
        jobs.append(j)
    return Response(replace=Flow(jobs, output=[j.output for j in jobs], name=f"phonon displacements {material_id or ''}"))



@job(output_schema=PhononDoc, data=list(PHONON_DATA_FIELDS))
def phonons_from_forces(
    structure: Structure,
    supercells: list[Structure],
    forces: list[Any],
    settings: dict,
    supercell_matrix: Any,
    engine: EngineInfo | dict | None = None,
    material_id: str | None = None,
    enthalpy_per_atom: float | None = None,
    nac_params: dict | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
) -> PhononDoc:
    """Phonons from displaced supercells and their forces computed elsewhere (VASP, a reference
    engine, or the perturbed training supercells).

    ``forces``: per supercell an (N, 3) array (eV/Å) or a force document with ``forces`` (and
    ``engine``). With ``settings["fc_method"] == "symfc"`` any displacements work (atoms are
    matched to phonopy's supercell, in any order); otherwise the supercells must be phonopy's own
    finite displacements for these settings.
    """
    structure = as_pymatgen_structure(structure)
    mid = material_name(structure, material_id)
    force_arrays = []
    for f in forces:
        value = get_field(f, "forces") if not isinstance(f, (list, np.ndarray)) else f
        force_arrays.append(None if value is None else np.asarray(value, dtype=float))
    if engine is None:
        engine = next((get_field(f, "engine") for f in forces if get_field(f, "engine") is not None), None)
    info = EngineInfo.model_validate(engine) if engine is not None else EngineInfo(name="unknown", kind="dft")
    smat = np.asarray(supercell_matrix)
    try:
        if len(force_arrays) != len(supercells):
            raise InputError(
                f"{len(supercells)} displaced supercells but {len(force_arrays)} force calculations: the number of "
                "force calculations was counted on another structure (a relaxation that changed the symmetry "
                "changes phonopy's displacements); rerun the phonons on the relaxed structure",
                material_id=mid, stage="phonon")
        missing = [i + 1 for i, f in enumerate(force_arrays) if f is None]
        if missing:
            causes = [f"#{i}: {get_field(forces[i - 1], 'reason')}" + (f" (in {get_field(forces[i - 1], 'dir_name')})"
                                                                  if get_field(forces[i - 1], "dir_name") else "")
                      for i in missing if get_field(forces[i - 1], "reason")]
            raise InputError(f"forces are missing for displaced supercell(s) {missing} of {len(force_arrays)}"
                             + (f": {'; '.join(causes)}" if causes else " (their jobs failed: see their logs)"),
                             material_id=mid, stage="phonon")
        for i, f in enumerate(force_arrays):  # NaN / absurd forces from a broken calculation
            check_forces(f, material_id=mid, what=f"displaced supercell {i + 1}")
        phonon = ph_core.make_phonopy(structure, smat, symprec=settings["symprec"])
        if nac_params:
            ph_core.set_nac_params(phonon, nac_params=nac_params, symprec=settings["symprec"])
        fc_method = settings.get("fc_method")
        if fc_method == "symfc" or settings.get("random_displacements"):
            ph_core.set_random_displacement_dataset(phonon, [as_pymatgen_structure(s) for s in supercells], force_arrays,
                                                    material_id=mid)
        else:
            expected = ph_core.generate_displacements(phonon, distance=settings["displacement"])
            if len(expected) != len(supercells):
                raise InputError(f"{len(supercells)} displaced supercells given, phonopy's finite displacements are "
                                 f"{len(expected)}", material_id=mid, stage="phonon")
            for i, (sc, ref) in enumerate(zip(supercells, expected, strict=True)):
                order, disp = ph_core.map_to_supercell(phonon, as_pymatgen_structure(sc), material_id=mid)
                _, ref_disp = ph_core.map_to_supercell(phonon, ref, material_id=mid)
                if not np.allclose(disp, ref_disp, atol=1e-4):
                    raise InputError(f"displaced supercell {i + 1} is not phonopy's displacement {i + 1}; "
                                     "use fc_method='symfc' for arbitrary displacements", material_id=mid, stage="phonon")
                if force_arrays[i].shape != (len(order), 3):
                    raise InputError(f"forces of displaced supercell {i + 1} have shape {force_arrays[i].shape}, "
                                     f"expected ({len(order)}, 3)", material_id=mid, stage="phonon")
                force_arrays[i] = force_arrays[i][order]
            ph_core.set_forces(phonon, force_arrays, material_id=mid)
        return _doc_with_force_constants(phonon, structure, info, settings, mid, fc_method, enthalpy_per_atom,
                                         nac_params, store_force_constants, store_phonopy_yaml)
    except PhononFlowsError as exc:
        return failed_phonon_doc(structure, info, [str(exc.with_material(mid, "phonon"))], settings, mid, smat,
                                 enthalpy_per_atom)


def member_spread(phonon, results: Sequence[Any], n_displaced: int, with_residual: bool, settings: dict,
                  mid: str | None) -> float | None:
    """A committee engine's frequency spread (THz) from its force results (the displaced supercells,
    then the undisplaced one ``with_residual``); None for a single model. Computed before the
    mean forces' force constants, on a copy of ``phonon``."""
    members = [getattr(r, "member_forces", None) for r in results]
    return spread_from_member_forces(phonon, members, n_displaced, with_residual, settings.get("fc_method"), mid)


def _doc_with_force_constants(phonon, structure, info, settings, mid, fc_method, enthalpy_per_atom, nac_params,
                              store_force_constants, store_phonopy_yaml, residual_force=None,
                              committee_spread=None) -> PhononDoc:
    """The force constants of a Phonopy object whose forces are set, then its PhononDoc."""
    method = ph_core.produce_force_constants(phonon, fc_method, material_id=mid)
    return phonon_doc_from_phonopy(
        phonon, structure, info, settings, material_id=mid, fc_method=method,
        displacement=settings["displacement"], enthalpy_per_atom=enthalpy_per_atom,
        store_force_constants=store_force_constants, store_phonopy_yaml=store_phonopy_yaml,
        nac_source=(nac_params or {}).get("source"), residual_force=residual_force,
        committee_spread=committee_spread,
    )


def import_phonopy_doc(
    directory: str | Path,
    settings: dict | None = None,
    material_id: str | None = None,
    enthalpy_per_atom: float | None = None,
    fc_method: str | None = None,
    primitive_matrix: Any = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
) -> PhononDoc:
    """PhononDoc of a phonopy calculation folder, or of a phonondb entry (its ``.tar.lzma`` or
    unpacked folder: a DFT reference, see :func:`phonondb_phonon_doc`). Raises
    :class:`InputError` naming the folder."""
    settings = dict(settings or phonon_settings())
    if pdb.is_phonondb_entry(directory):
        return phonondb_phonon_doc(directory, settings, material_id, enthalpy_per_atom,
                                   store_force_constants=store_force_constants, store_phonopy_yaml=store_phonopy_yaml)
    imp = load_phonopy_folder(
        directory, primitive_matrix=primitive_matrix, fc_method=fc_method, symprec=settings["symprec"]
    )
    structure = ph_core.to_structure(imp.phonon.unitcell)
    settings["fc_method"] = imp.fc_method
    settings["displacement"] = None if imp.displacement_distance is None else round(imp.displacement_distance, 6)
    engine = EngineInfo(
        name=IMPORT_ENGINE_NAME,
        kind="imported",
        version=None,
        settings={"calculator": imp.calculator, "files": imp.files, "dataset_type": imp.dataset_type,
                  "n_displacements": imp.n_displacements, "nac": imp.has_nac},
        provenance=str(Path(directory).resolve()),
    )
    mid = material_id or Path(directory).resolve().name
    return phonon_doc_from_phonopy(
        imp.phonon, structure, engine, settings, material_id=mid, fc_method=imp.fc_method,
        displacement=settings["displacement"], enthalpy_per_atom=enthalpy_per_atom,
        store_force_constants=store_force_constants, store_phonopy_yaml=store_phonopy_yaml,
        nac_source=imp.nac_source,
    )


def phonondb_engine_info(entry: pdb.PhonondbEntry, imp=None, kind_of_labels: str = "finite-displacement") -> EngineInfo:
    """The EngineInfo of numbers from a phonondb entry: DFT (VASP, PBEsol), phonondb 2018-04-17,
    the entry's mp id, its license and the credit it asks for."""
    settings = {
        "label": f"DFT ({pdb.PHONONDB_XC}, {pdb.PHONONDB_NAME})",
        "code": pdb.PHONONDB_CODE, "xc": pdb.PHONONDB_XC, "database": pdb.PHONONDB_NAME,
        "database_version": pdb.PHONONDB_VERSION, "mp_id": entry.mp_id, "entry": entry.name,
        "license": pdb.PHONONDB_LICENSE, "attribution": pdb.PHONONDB_ATTRIBUTION, "files": list(entry.files),
        "labels": kind_of_labels,
    }
    if imp is not None:
        settings.update({"calculator": imp.calculator, "dataset_type": imp.dataset_type,
                         "n_displacements": imp.n_displacements, "nac": imp.has_nac})
    return EngineInfo(name=pdb.PHONONDB_NAME, kind="dft", version=pdb.PHONONDB_VERSION, settings=settings,
                      provenance=entry.provenance)


def phonondb_phonon_doc(
    path: str | Path,
    settings: dict | None = None,
    material_id: str | None = None,
    enthalpy_per_atom: float | None = None,
    use_born: bool = True,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
) -> PhononDoc:
    """The DFT reference PhononDoc of a phonondb entry (``.tar.lzma`` or unpacked folder):
    engine kind ``dft`` (VASP, PBEsol), provenance phonondb 2018-04-17 + mp id + license.
    ``material_id`` defaults to the entry's mp id. Raises :class:`InputError` naming the entry."""
    settings = dict(settings or phonon_settings())
    imp, entry = pdb.load_phonondb_entry(path, use_born=use_born, symprec=settings["symprec"])
    return phonondb_doc_from_import(imp, entry, settings, material_id, enthalpy_per_atom, store_force_constants,
                                    store_phonopy_yaml)


def phonondb_doc_from_import(
    imp: ImportedPhonopy,
    entry: pdb.PhonondbEntry,
    settings: dict | None = None,
    material_id: str | None = None,
    enthalpy_per_atom: float | None = None,
    store_force_constants: bool = True,
    store_phonopy_yaml: bool = True,
) -> PhononDoc:
    """:func:`phonondb_phonon_doc` of an entry already loaded (``pdb.load_phonondb_entry``); its
    Phonopy object (``imp.phonon``) stays usable afterwards."""
    settings = dict(settings or phonon_settings())
    structure = ph_core.to_structure(imp.phonon.unitcell)
    settings["fc_method"] = imp.fc_method
    settings["displacement"] = round(imp.displacement_distance, 6)
    mid = material_id or entry.mp_id or entry.name
    return phonon_doc_from_phonopy(
        imp.phonon, structure, phonondb_engine_info(entry, imp), settings, material_id=mid,
        fc_method=imp.fc_method, displacement=settings["displacement"], enthalpy_per_atom=enthalpy_per_atom,
        store_force_constants=store_force_constants, store_phonopy_yaml=store_phonopy_yaml,
        nac_source=imp.nac_source,
    )


@job(output_schema=PhononDoc, data=list(PHONON_DATA_FIELDS))
def import_phonopy(
    directory: str,
    settings: dict | None = None,
    material_id: str | None = None,
    enthalpy_per_atom: float | None = None,
    fc_method: str | None = None,
) -> PhononDoc:
    """Job: a phonopy calculation folder as a reference PhononDoc (failed doc on bad input)."""
    try:
        return import_phonopy_doc(directory, settings, material_id, enthalpy_per_atom, fc_method)
    except PhononFlowsError as exc:
        settings = settings or phonon_settings()
        info = EngineInfo(name=IMPORT_ENGINE_NAME, kind="imported", provenance=str(directory))
        return failed_phonon_doc(None, info, [str(exc)], settings, material_id or Path(directory).name)


def write_phonopy_yaml(doc: PhononDoc | dict, path: str | Path) -> Path:
    """Write a PhononDoc's raw phonopy data (``phonopy_params.yaml``) to ``path``; ``phonopy.load``
    reads it back (cell, displacements with forces, Born charges)."""
    text = doc.get("phonopy_yaml") if isinstance(doc, dict) else doc.phonopy_yaml
    if not text:
        raise InputError("this phonon document has no phonopy data (failed, or stored without it)")
    path = Path(path)
    path.write_text(text)
    return path


@job(output_schema=PhononDoc, data=list(PHONON_DATA_FIELDS))
def store_phonon_doc(doc: PhononDoc) -> PhononDoc:
    """Job that just returns a finished PhononDoc, to put it into a store (e.g. from the CLI)."""
    return doc


# --------------------------------------------------------------------------------------------
# maker
# --------------------------------------------------------------------------------------------
@dataclass
class PhononMaker(Maker):
    """Structure + force engine -> PhononDoc, with the recipe's settings by default.

    Parameters
    ----------
    engine, engine_kwargs
        Force engine spec resolved in the job by :func:`phonon_flows.engines.get_engine`:
        ``"mace"`` (``model_sha256=...`` or ``model_path=...``, ``device``, ``batch_size``...),
        ``"chgnet"``, ``"emt"``. Ignored when ``force_maker`` is given.
    force_maker
        A maker of one force job per structure (``VaspForceMaker``, ``ReferenceForceMaker``):
        then ``make`` returns a Flow (displacements -> force jobs -> phonons).
    displacement
        Finite displacement amplitude, Å (0.01).
    fc_method
        None (finite differences; symfc for random displacements), "finite-difference" or "symfc".
    random_displacements, random_seed, snapshot_factor
        With a number, that many supercells with all atoms displaced by ``displacement`` in random
        directions (type-II dataset) and force constants by symfc. "auto": ``snapshot_factor``
        (4, phonopy's) times symfc's fewest supercells for the crystal's symmetry.
    temperatures, mesh_length, cutoff_frequency, stability_tolerance, band_npoints
        300/1000 K, l = 75 Å, 0.1 THz, -0.5 THz, 101 points on the longest band segment.
    min_atoms, max_atoms
        Supercell window when no supercell matrix is given (``choose_supercell_matrix``).
    total_dos
        Compute the total DOS into the document (default True; a screening leaves it out unless
        asked, to save the time).
    residual_forces
        With random displacements, "subtract" (default): where the crystal's symmetry lets an atom
        carry a force in the undisplaced structure (a free internal coordinate), the engine also
        computes the undisplaced supercell and its forces are subtracted from the displaced ones
        (phonopy's ``--fz``), so symfc fits the engine's Hessian at the structure as given
        (``PhononDoc.residual_force_max_eV_A`` records the largest). "ignore": not computed.
        Finite displacements need nothing (F0 cancels in phonopy's fit). Forces from
        ``force_maker`` jobs are used as given.
    engine_enthalpy
        Record the engine's energy per atom of the unit cell as ``enthalpy_per_atom_eV`` (None:
        yes for reference engines, no for MLIPs trained on forces only).
    """

    name: str = "phonons"
    engine: str = "mace"
    engine_kwargs: dict = field(default_factory=dict)
    force_maker: Maker | None = None
    displacement: float = ph_core.DEFAULT_DISPLACEMENT
    fc_method: str | None = None
    random_displacements: int | str | None = None
    random_seed: int | None = 123
    temperatures: tuple[float, ...] = ph_core.DEFAULT_TEMPERATURES
    mesh_length: float = ph_core.DEFAULT_MESH_LENGTH
    cutoff_frequency: float = ph_core.DEFAULT_CUTOFF_FREQUENCY
    stability_tolerance: float = ph_core.DEFAULT_STABILITY_TOLERANCE
    band_npoints: int = ph_core.DEFAULT_BAND_NPOINTS
    symprec: float = ph_core.DEFAULT_SYMPREC
    min_atoms: int = 100
    max_atoms: int = 200
    engine_enthalpy: bool | None = None
    store_force_constants: bool = True
    store_phonopy_yaml: bool = True
    total_dos: bool = True
    residual_forces: str = ph_core.DEFAULT_RESIDUAL_FORCES
    snapshot_factor: float = ph_core.DEFAULT_SNAPSHOT_FACTOR

    def settings(self) -> dict[str, Any]:
        if self.fc_method not in (None, *ph_core.FC_METHODS):
            raise InputError(f"fc_method must be None or one of {ph_core.FC_METHODS}, not {self.fc_method!r}")
        return phonon_settings(
            displacement=self.displacement, fc_method=self.fc_method, random_displacements=self.random_displacements,
            random_seed=self.random_seed, temperatures=self.temperatures, mesh_length=self.mesh_length,
            cutoff_frequency=self.cutoff_frequency, stability_tolerance=self.stability_tolerance,
            band_npoints=self.band_npoints, symprec=self.symprec, min_atoms=self.min_atoms, max_atoms=self.max_atoms,
            total_dos=self.total_dos, residual_forces=self.residual_forces, snapshot_factor=self.snapshot_factor,
        )

    def make(
        self,
        structure: Structure,
        material_id: str | None = None,
        supercell_matrix: Any = None,
        enthalpy_per_atom: float | None = None,
        nac_params: dict | None = None,
    ):
        """A Job (force engine) or a Flow (force maker) whose output is the PhononDoc.

        ``supercell_matrix`` (phonopy convention) to match a reference exactly; None chooses one
        with :func:`phonon_flows.core.supercells.choose_supercell_matrix`. ``nac_params``: Born
        charges / dielectric tensor (phonopy's dict) for the non-analytical correction.
        """
        settings = self.settings()
        if self.force_maker is None:
            j = engine_phonons(
                structure, self.engine, dict(self.engine_kwargs), settings, supercell_matrix, material_id,
                enthalpy_per_atom, self.engine_enthalpy, nac_params, self.store_force_constants, self.store_phonopy_yaml,
            )
            j.name = f"{self.name} {self.engine}" + (f" {material_id}" if material_id else "")
            j.config.expose_store = True  # a MACE model given by sha256 is fetched from the job store
            return set_category(j, engine_category(self.engine))

        disp = generate_phonon_displacements(structure, settings, supercell_matrix, material_id, nac_params)
        disp.name = f"{self.name} displacements" + (f" {material_id}" if material_id else "")
        set_category(disp, "cpu")
        forces = run_phonon_displacements(disp.output["supercells"], self.force_maker, material_id)
        forces.name = f"{self.name} run displacements"
        collect = phonons_from_forces(
            structure, disp.output["supercells"], forces.output, settings, disp.output["supercell_matrix"],
            None, material_id, enthalpy_per_atom, nac_params, self.store_force_constants, self.store_phonopy_yaml,
        )
        collect.name = f"{self.name} collect" + (f" {material_id}" if material_id else "")
        collect.config.on_missing_references = OnMissing.NONE  # a failed static -> failed PhononDoc
        set_category(collect, "cpu")
        return Flow([disp, forces, collect], output=collect.output, name=f"{self.name} {material_id or ''}".strip())
