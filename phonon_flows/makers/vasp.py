"""VASP makers with the recipe's settings: atomate2's RelaxMaker/StaticMaker (written inputs,
custodian, TaskDoc parsing: all atomate2's), followed by a thin job that turns the TaskDoc into
this package's RelaxDoc / ForceDoc.

- :class:`RecipeRelaxMaker`, :class:`RecipeStaticMaker`: atomate2 makers whose input sets carry
  the recipe's INCAR (:mod:`phonon_flows.engines.vasp`).
- :class:`VaspRelaxMaker`: structure -> (relax, relax again) -> RelaxDoc.
- :class:`VaspForceMaker`: perturbed supercell -> static -> ForceDoc.

VASP options (``VaspForceMaker.with_settings``, ``VaspRelaxMaker.with_settings``, and a campaign's
``engine_kwargs`` / ``relax_kwargs`` with ``engine="vasp"``): the input-set options of atomate2's
generators (:data:`VASP_INPUT_OPTIONS`, e.g. ``user_incar_settings={"ENCUT": 600}``),
``run_vasp_kwargs`` (vasp_cmd, custodian handlers), or a whole atomate2 maker (``static_maker=``,
``relax_maker=``) that the options then apply to. Any other option is an InputError.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomate2.vasp.jobs.base import BaseVaspMaker
from atomate2.vasp.jobs.core import DielectricMaker, RelaxMaker, StaticMaker
from atomate2.vasp.sets.base import VaspInputGenerator
from jobflow import Flow, Maker, job
from pymatgen.core import Structure

from phonon_flows.core.phonons import nac_params_from_dfpt
from phonon_flows.engines.vasp import (
    RecipeBornSetGenerator,
    RecipeRelaxSetGenerator,
    RecipeStaticSetGenerator,
    force_doc_from_outputs,
    relax_doc_from_outputs,
    vasp_engine_info,
    vasp_failure,
)
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.schemas.common import get_field
from phonon_flows.schemas.forces import FORCE_DATA_FIELDS, FailedCalculation, ForceDoc, RelaxDoc


def _incar_dict(incar: Any) -> dict | None:
    if incar is None:
        return None
    return {str(k): (v.tolist() if hasattr(v, "tolist") else v) for k, v in dict(incar).items()}


#: options of atomate2's VASP input-set generators that a campaign may pass through
VASP_INPUT_OPTIONS = ("user_incar_settings", "user_kpoints_settings", "user_potcar_settings", "user_potcar_functional")
#: dict options merged into the maker's own (the recipe's settings stay unless overridden)
_MERGED = ("user_incar_settings", "user_kpoints_settings", "user_potcar_settings", "run_vasp_kwargs")


def relax_options(engine_kwargs: dict[str, Any], relax_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Options of the relaxations of a campaign: the input-set options and ``run_vasp_kwargs`` of
    ``engine_kwargs`` (which every VASP job gets), updated by ``relax_kwargs`` (dicts merged)."""
    out = {k: v for k, v in engine_kwargs.items() if k in (*VASP_INPUT_OPTIONS, "run_vasp_kwargs")}
    for key, value in relax_kwargs.items():
        if key in _MERGED and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def with_vasp_options(maker: BaseVaspMaker, **options: Any) -> BaseVaspMaker:
    """A copy of an atomate2 VASP maker with input-set ``options`` (:data:`VASP_INPUT_OPTIONS`)
    and ``run_vasp_kwargs`` applied; dict options are merged into the maker's own. An option
    that cannot apply is an :class:`InputError` naming it."""
    unknown = sorted(set(options) - {*VASP_INPUT_OPTIONS, "run_vasp_kwargs"})
    if unknown:
        raise InputError(f"VASP option(s) {', '.join(unknown)} cannot apply to {type(maker).__name__}: use "
                         f"{', '.join(VASP_INPUT_OPTIONS)}, run_vasp_kwargs, or a maker of your own", stage="label")
    if not isinstance(maker, BaseVaspMaker):
        raise InputError(f"a VASP maker must be an atomate2 VASP maker (BaseVaspMaker), not {type(maker).__name__}")
    gen_updates: dict[str, Any] = {}
    maker_updates: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in _MERGED and not isinstance(value, dict):
            raise InputError(f"VASP option {key} must be a dict, not {type(value).__name__}", stage="label")
        if key == "run_vasp_kwargs":
            maker_updates[key] = {**dict(maker.run_vasp_kwargs or {}), **value}
        elif key in _MERGED:
            gen_updates[key] = {**dict(getattr(maker.input_set_generator, key) or {}), **value}
        else:
            gen_updates[key] = value
    gen = dataclasses.replace(maker.input_set_generator, **gen_updates) if gen_updates else maker.input_set_generator
    return dataclasses.replace(maker, input_set_generator=gen, **maker_updates)


def asked_incar(maker: BaseVaspMaker) -> dict[str, Any]:
    """The INCAR settings a VASP maker asks for beyond the base set: the generator's
    ``incar_updates`` overridden by ``user_incar_settings``."""
    gen = maker.input_set_generator
    return {**dict(getattr(gen, "incar_updates", {}) or {}), **dict(gen.user_incar_settings or {})}


def _dir(dir_name: Any) -> str | None:
    return None if dir_name is None else str(dir_name)


@dataclass
class RecipeRelaxMaker(RelaxMaker):
    """atomate2's VASP RelaxMaker with the recipe's input set (PBE, ENCUT 520, EDIFF 1e-8,
    EDIFFG -1e-3, KSPACING 0.15); run through custodian by atomate2."""

    name: str = "recipe relax"
    input_set_generator: VaspInputGenerator = field(default_factory=RecipeRelaxSetGenerator)


@dataclass
class RecipeStaticMaker(StaticMaker):
    """atomate2's VASP StaticMaker with the recipe's single-point input set (same INCAR, NSW 0, ISYM 0)."""

    name: str = "recipe static"
    input_set_generator: VaspInputGenerator = field(default_factory=RecipeStaticSetGenerator)


@dataclass
class RecipeBornMaker(DielectricMaker):
    """atomate2's DFPT (LEPSILON) DielectricMaker with the recipe's INCAR: Born effective charges
    and the dielectric tensor for the non-analytical correction (as atomate2's ``born_maker``)."""

    name: str = "recipe born"
    input_set_generator: VaspInputGenerator = field(default_factory=RecipeBornSetGenerator)


@job
def born_nac_params(task_doc: Any, structure: Structure, supercell_matrix: Any, material_id: str | None = None,
                    symprec: float = 1e-5) -> dict | None:
    """phonopy's ``nac_params`` (``source`` "DFPT (LEPSILON)") from atomate2's TaskDoc of a
    RecipeBornMaker run on ``structure``; None (phonons without NAC, said in the log) when the
    run failed or holds no Born charges."""
    import logging

    log = logging.getLogger(__name__)
    if task_doc is None or get_field(task_doc, "failed") is True:
        log.warning("%s: no Born charges (DFPT run failed: %s); phonons without NAC", material_id,
                    get_field(task_doc, "reason"))
        return None
    calc = (get_field(task_doc, "calcs_reversed") or [None])[0]
    out = get_field(calc, "output")
    outcar = get_field(out, "outcar") or {}
    born = outcar.get("born") if isinstance(outcar, dict) else None
    eps = get_field(out, "epsilon_static") or (outcar.get("dielectric_tensor") if isinstance(outcar, dict) else None)
    if born is None or len(born) == 0 or eps is None:
        log.warning("%s: the DFPT run holds no Born charges or dielectric tensor; phonons without NAC", material_id)
        return None
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    params = nac_params_from_dfpt(born, eps, structure, supercell_matrix, symprec=symprec)
    return {**params, "source": "DFPT (LEPSILON)"}


def _vasp_data_objects() -> list:
    from atomate2.vasp.jobs.base import _DATA_OBJECTS

    return list(_DATA_OBJECTS)


@job(data=_vasp_data_objects())
def guarded_vasp_job(maker: BaseVaspMaker, structure: Structure, prev_dir: str | None = None,
                     material_id: str | None = None, perturbation_index: int | None = None):
    """Run an atomate2 VASP maker's job body here (inputs, custodian, TaskDoc: all atomate2's);
    when it raises (custodian gave up, VASP crashed, an unconverged SCF, unparseable outputs)
    return a :class:`FailedCalculation` with the cause instead of failing the job."""
    from pathlib import Path as _Path

    try:
        return type(maker).make.original(maker, structure, prev_dir=prev_dir)
    except Exception as exc:  # noqa: BLE001 - any failure of one calculation becomes its document
        reason, errors = vasp_failure(exc, _Path.cwd())
        return FailedCalculation(material_id=material_id, perturbation_index=perturbation_index, reason=reason,
                                 custodian_errors=errors, dir_name=str(_Path.cwd()))


@job(data=list(FORCE_DATA_FIELDS))
def vasp_force_doc(task_doc: Any, material_id: str, perturbation_index: int | None = None) -> ForceDoc:
    """ForceDoc from atomate2's TaskDoc of a VASP single point (stress in kB), or the
    FailedCalculation of a run that gave no result (passed on, with the material)."""
    if get_field(task_doc, "failed") is True:
        failed = task_doc if isinstance(task_doc, FailedCalculation) else FailedCalculation.model_validate(
            {k: v for k, v in dict(task_doc).items() if not str(k).startswith("@")})
        return failed.model_copy(update={"material_id": material_id, "perturbation_index": perturbation_index})
    out = get_field(task_doc, "output")
    try:
        structure = get_field(out, "structure")
        if isinstance(structure, dict):
            structure = Structure.from_dict(structure)
        incar = get_field(get_field(task_doc, "input"), "incar")
        dir_name = _dir(get_field(task_doc, "dir_name"))
        engine = vasp_engine_info("static", version=get_field(task_doc, "vasp_version"), incar=_incar_dict(incar),
                                  provenance=dir_name)
        return force_doc_from_outputs(structure, get_field(out, "energy"), get_field(out, "forces"), get_field(out, "stress"),
                                      material_id, perturbation_index, engine, dir_name)
    except PhononFlowsError as err:
        raise err.with_material(material_id, "label") from err



@job(output_schema=RelaxDoc)
def vasp_relax_doc(
    input_structure: Structure,
    structure: Structure,
    energy: float,
    material_id: str,
    forces: list | None = None,
    dir_name: str | None = None,
    vasp_version: str | None = None,
    incar: dict | None = None,
    electronic_steps: list | None = None,
    pressure_kbar: float | None = None,
) -> RelaxDoc:
    """RelaxDoc from the outputs of a VASP relaxation (a TaskDoc's ``output``).

    ``electronic_steps``: per relaxation run, emmet's ``num_electronic_steps`` (one entry per
    ionic step): their total length is ``n_steps``. ``pressure_kbar``: the PSTRESS asked of the
    relaxation (kB; None: the INCAR's PSTRESS of the last run, 0 when unset)."""
    try:
        if isinstance(structure, dict):
            structure = Structure.from_dict(structure)
        if isinstance(input_structure, dict):
            input_structure = Structure.from_dict(input_structure)
        incar = _incar_dict(incar) or {}
        engine = vasp_engine_info("relax", version=vasp_version, incar=incar or None, provenance=_dir(dir_name))
        n_steps = None
        if electronic_steps is not None and all(s is not None for s in electronic_steps):
            n_steps = sum(len(s) for s in electronic_steps)
        return relax_doc_from_outputs(input_structure, structure, energy, material_id, forces=forces, engine=engine,
                                      dir_name=_dir(dir_name), n_steps=n_steps,
                                      pressure_GPa=float(pressure_kbar if pressure_kbar is not None
                                                         else incar.get("PSTRESS") or 0.0) / 10.0)
    except PhononFlowsError as err:
        raise err.with_material(material_id, "relax") from err


@dataclass
class VaspForceMaker(Maker):
    """Perturbed supercell -> VASP single point with the recipe's settings -> ForceDoc (or a
    FailedCalculation saying why, when custodian or VASP gave up).

    ``static_maker`` is an atomate2 VASP maker (default :class:`RecipeStaticMaker`); change its
    ``run_vasp_kwargs`` (vasp_cmd, custodian handlers) or ``input_set_generator.user_incar_settings``
    as with any atomate2 maker.
    """

    name: str = "vasp forces"
    static_maker: BaseVaspMaker = field(default_factory=RecipeStaticMaker)

    @classmethod
    def with_settings(cls, static_maker: BaseVaspMaker | None = None, **options: Any) -> VaspForceMaker:
        """A VaspForceMaker whose static (``static_maker`` or the recipe's) gets the VASP
        ``options`` (:func:`with_vasp_options`), e.g. ``user_incar_settings={"ENCUT": 600}``."""
        return cls(static_maker=with_vasp_options(static_maker or RecipeStaticMaker(), **options))

    def make(
        self,
        structure: Structure,
        material_id: str | None = None,
        perturbation_index: int | None = None,
        prev_dir: str | Path | None = None,
    ) -> Flow:
        """A flow whose output is the ForceDoc of ``structure``."""
        material_id = material_id or "unnamed"
        if not isinstance(self.static_maker, BaseVaspMaker):
            raise InputError(f"VaspForceMaker.static_maker must be an atomate2 VASP maker (BaseVaspMaker), not "
                             f"{type(self.static_maker).__name__}", material_id=material_id, stage="label")
        label = f"{material_id}" + ("" if perturbation_index is None else f" #{perturbation_index}")
        static = guarded_vasp_job(self.static_maker, structure, None if prev_dir is None else str(prev_dir),
                                  material_id, perturbation_index)
        static.name = f"{self.static_maker.name} {label}"
        doc = vasp_force_doc(static.output, material_id, perturbation_index)
        doc.name = f"{self.name} {label}"
        return Flow([static, doc], output=doc.output, name=f"{self.name} {label}")


@dataclass
class VaspRelaxMaker(Maker):
    """Structure -> VASP relaxation(s) with the recipe's settings -> RelaxDoc (enthalpy per atom).

    With ``n_relaxations = 2`` (default) the second relaxation restarts from the first one's
    cell, which removes the Pulay stress of a plane-wave basis set up for the starting cell.
    """

    name: str = "vasp relax"
    relax_maker: BaseVaspMaker = field(default_factory=RecipeRelaxMaker)
    n_relaxations: int = 2

    @classmethod
    def with_settings(cls, relax_maker: BaseVaspMaker | None = None, n_relaxations: int = 2,
                      **options: Any) -> VaspRelaxMaker:
        """A VaspRelaxMaker whose relaxations (``relax_maker`` or the recipe's) get the VASP
        ``options`` (:func:`with_vasp_options`), e.g. ``user_incar_settings={"PSTRESS": 10}``."""
        return cls(relax_maker=with_vasp_options(relax_maker or RecipeRelaxMaker(), **options),
                   n_relaxations=n_relaxations)

    def make(self, structure: Structure, material_id: str | None = None, prev_dir: str | Path | None = None) -> Flow:
        """A flow whose output is the RelaxDoc of ``structure``."""
        if self.n_relaxations < 1:
            raise ValueError("n_relaxations must be >= 1")
        material_id = material_id or "unnamed"
        jobs = []
        current, current_dir = structure, prev_dir
        for i in range(self.n_relaxations):
            relax = self.relax_maker.make(current, prev_dir=current_dir)
            relax.name = f"{self.relax_maker.name} {i + 1} {material_id}"
            jobs.append(relax)
            current, current_dir = relax.output.output.structure, relax.output.dir_name
        out = jobs[-1].output
        steps = [j.output.calcs_reversed[0].output.num_electronic_steps for j in jobs]
        doc = vasp_relax_doc(
            structure, out.output.structure, out.output.energy, material_id, out.output.forces, out.dir_name,
            out.vasp_version, out.input.incar, steps, asked_incar(self.relax_maker).get("PSTRESS") or 0.0,
        )
        doc.name = f"{self.name} {material_id}"
        return Flow([*jobs, doc], output=doc.output, name=f"{self.name} {material_id}")
