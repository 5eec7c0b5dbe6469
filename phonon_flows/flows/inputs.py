"""The inputs of a flow: read and check the structures, name the materials, resolve the held-out
ones.

A material whose input is bad (unreadable file, disordered, overlapping atoms, elements the
engine cannot handle, no supercell in the window) is recorded with the reason when the flow is
made and gets no jobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from phonon_flows.core.structures import (
    MIN_DISTANCE,
    check_elements,
    duplicate_reason,
    find_duplicates,
    material_id_for,
    primitive_cell,
    read_structure,
    unique_material_id,
    validate_structure,
)
from phonon_flows.core.supercells import supercell_sizes_in_window
from phonon_flows.engines.reference import reference_engine_elements
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.makers.perturb import PerturbationMaker
from phonon_flows.makers.reference import ReferenceForceMaker, ReferenceRelaxMaker
from phonon_flows.schemas.common import MaterialError

StructureInput = Structure | str | Path


def maker_engine_elements(maker: Any) -> tuple[str, frozenset[str]] | None:
    """(engine name, supported elements) of a reference or VASP maker; None for other makers."""
    if isinstance(maker, (ReferenceForceMaker, ReferenceRelaxMaker)):
        return maker.engine, reference_engine_elements(maker.engine)
    if type(maker).__name__ in ("VaspForceMaker", "VaspRelaxMaker"):  # elements with a POTCAR in the recipe's set
        from phonon_flows.engines.vasp import vasp_elements  # atomate2's VASP sets: heavy, optional

        return "vasp", vasp_elements()
    return None


def prepare_materials(
    structures: Sequence[StructureInput] | Mapping[str, StructureInput],
    material_ids: Sequence[str] | None = None,
    *,
    min_distance: float = MIN_DISTANCE,
    engines: Sequence[tuple[str, frozenset[str]]] = (),
    perturbation_maker: PerturbationMaker | None = None,
    check_duplicates: bool = True,
) -> tuple[list[tuple[str, Structure]], list[MaterialError]]:
    """Read and check the inputs of a flow: ``[(material_id, structure)]`` of the good ones and a
    MaterialError (stage ``input``) naming each bad one and its problem.

    Inputs are Structures or structure files; ids come from ``material_ids``, the keys of a
    mapping, or :func:`~phonon_flows.core.structures.material_id_for` (the file name for a file
    that cannot be read). Checks: readable, ordered, no overlapping atoms, elements handled by
    each of ``engines``, some supercell size in the perturbation maker's window, and (with
    ``check_duplicates``) no crystal given twice (the first is kept, see
    :func:`phonon_flows.core.structures.find_duplicates`).
    """
    if isinstance(structures, Mapping):
        material_ids = list(structures.keys())
        items = list(structures.values())
    else:
        items = list(structures)
    if material_ids is not None and len(material_ids) != len(items):
        raise InputError(f"{len(material_ids)} material ids for {len(items)} structures", stage="input")

    good: list[tuple[str, Structure]] = []
    bad: list[MaterialError] = []
    taken: set[str] = set()
    for i, item in enumerate(items):
        given = material_ids[i] if material_ids is not None else None
        name = given or (Path(item).name if isinstance(item, (str, Path)) else f"structure-{i}")
        try:
            structure = read_structure(item, material_id=given) if isinstance(item, (str, Path)) else item
            if isinstance(structure, Structure) and not given:
                try:
                    name = material_id_for(structure)
                except Exception:  # noqa: BLE001 - named by formula then
                    name = structure.composition.reduced_formula
            name = unique_material_id(name, taken)
            validate_structure(structure, name, min_distance=min_distance)
            for engine, elements in engines:
                check_elements(structure, elements, engine, name)
            if perturbation_maker is not None and perturbation_maker.supercell_matrix is None:
                unit = primitive_cell(structure) if perturbation_maker.use_primitive else structure
                one_atom = len(unit) == 1 or len(primitive_cell(unit)) == 1
                lo, hi = perturbation_maker.min_atoms, perturbation_maker.max_atoms
                if not one_atom and not supercell_sizes_in_window(len(unit), lo, hi):
                    raise InputError(
                        f"no supercell of this {len(unit)}-atom cell has between {lo} and {hi} atoms "
                        "(widen the supercell window)",
                        material_id=name,
                        stage="input",
                    )
        except PhononFlowsError as err:
            name = unique_material_id(err.material_id or name, taken)
            taken.add(name)
            bad.append(MaterialError(material_id=name, stage="input", reason=err.reason))
            continue
        taken.add(name)
        good.append((name, structure))
    if check_duplicates and len(good) > 1:  # the same crystal twice is computed once
        dups = find_duplicates(good)
        bad += [MaterialError(material_id=mid, stage="input", reason=duplicate_reason(first)) for mid, first in dups.items()]
        good = [g for g in good if g[0] not in dups]
    return good, bad


def input_items(
    structures: Sequence[StructureInput] | Mapping[str, StructureInput], material_ids: Sequence[str] | None
) -> tuple[list, list[str | None], list[str | None]]:
    """Items, their ids (mapping keys, given ids, file stems, or None) and sources (file paths)."""
    if isinstance(structures, Mapping):
        ids: list[str | None] = [str(k) for k in structures]
        items = list(structures.values())
    else:
        items = list(structures)
        if material_ids is not None:
            if len(material_ids) != len(items):
                raise InputError(f"{len(material_ids)} material ids for {len(items)} structures", stage="input")
            ids = [
                str(m) if m else (Path(it).stem if isinstance(it, (str, Path)) else None)
                for m, it in zip(material_ids, items, strict=True)
            ]
        else:
            ids = [Path(it).stem if isinstance(it, (str, Path)) else None for it in items]
    sources = [str(it) if isinstance(it, (str, Path)) else None for it in items]
    return items, ids, sources


def prepare_campaign_inputs(structures, material_ids, engines, perturbation_maker, min_distance):
    """``(materials, failures, sources, aliases)``: prepared materials as primitive cells (as given
    when ``perturbation_maker.use_primitive`` is False), input
    failures, the file of each material id, and the names a user may call each material by."""
    items, ids, sources = input_items(structures, material_ids)
    good, bad = prepare_materials(
        items, ids if any(ids) else None, min_distance=min_distance, engines=engines,
        perturbation_maker=perturbation_maker,
    )
    # prepare_materials keeps input order and names each good material with the id given (made
    # unique with -2, -3...); match them back to their inputs to know their files
    src_by_id: dict[str, str | None] = {}
    aliases: dict[str, set[str]] = {}
    remaining = list(zip(ids, sources, strict=True))
    for mid, _ in good:
        for k, (given, src) in enumerate(remaining):
            if given is None or mid == given or mid.startswith(f"{given}-"):
                src_by_id[mid] = src
                names = {mid}
                if given:
                    names.add(given)
                if src:
                    names |= {src, Path(src).name, Path(src).stem}
                aliases[mid] = names
                remaining.pop(k)
                break
    # the unit cells as given when the supercell matrices are on them (e.g. phonondb's DIM)
    keep = not getattr(perturbation_maker, "use_primitive", True)
    materials = [(mid, s if keep else primitive_cell(s)) for mid, s in good]
    return materials, bad, src_by_id, aliases


def resolve_holdout(holdout: Sequence[str], materials, failed, aliases) -> list[str]:
    ids = [mid for mid, _ in materials]
    failed_ids = {e.material_id for e in failed}
    chosen: list[str] = []
    unknown: list[str] = []
    for h in holdout:
        h = str(h)
        hits = [mid for mid in ids if h in aliases.get(mid, {mid})]
        if hits:
            chosen.extend(m for m in hits if m not in chosen)
        elif h not in failed_ids and Path(h).stem not in failed_ids and Path(h).name not in failed_ids:
            unknown.append(h)
    if unknown:
        raise InputError(
            f"held-out material(s) {', '.join(unknown)} are not among the inputs ({', '.join(ids) or 'none'})",
            stage="input",
        )
    return chosen

