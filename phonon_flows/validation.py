"""Input checks before any job runs: every refused input gets one line naming it and the reason,
and the good inputs go on.

:func:`check_inputs` is what ``phonon-flows run --check`` prints and what the flow makers rely on
(through :func:`phonon_flows.flows.prepare_materials`, which uses
:func:`phonon_flows.core.structures.find_duplicates`):

- the file exists, is not empty, and holds a periodic crystal structure (CIF, POSCAR, vasprun.xml,
  pymatgen JSON, extended XYZ, ...);
- the structure is ordered (no partial occupancy, no vacancies, no dummy species);
- no two atoms are closer than 0.5 Å (periodic images included);
- the chosen engine or model has parameters for every element (``emt``, ``chgnet``, ``vasp``:
  the recipe's PAW PBE POTCARs, ``mace``: the elements the model was trained on);
- the phonon supercell (same rule as the phonon jobs: smallest compact supercell with
  ``min_atoms``-``max_atoms`` atoms, 4x4x4 for one-atom primitive cells) is within
  ``max_supercell_atoms``;
- no material is given twice (same crystal by pymatgen's ``StructureMatcher``, e.g. the same
  structure in a conventional and a primitive cell): the first one is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pymatgen.core import Structure

from phonon_flows.core.structures import (
    MATCHER_KWARGS,
    MIN_DISTANCE,
    duplicate_reason,
    find_duplicates,
    primitive_cell,
    unique_material_id,
)
from phonon_flows.core.supercells import MAX_ATOMS, MIN_ATOMS, choose_supercell_matrix
from phonon_flows.engines.reference import reference_engine_elements
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.flows.inputs import prepare_materials
from phonon_flows.flows.screening import training_doc_for
from phonon_flows.schemas.common import MaterialError


def vasp_elements() -> frozenset[str]:
    """Elements with a POTCAR in the recipe's VASP input set (PAW PBE); see
    :func:`phonon_flows.engines.vasp.vasp_elements`."""
    from phonon_flows.engines.vasp import vasp_elements as _vasp_elements  # atomate2's VASP: heavy, optional

    return _vasp_elements()


__all__ = [
    "KNOWN_ENGINES", "MATCHER_KWARGS", "InputProblem", "check_inputs", "duplicate_reason", "engine_elements",
    "expand_inputs", "find_duplicates", "problem_lines", "supercell_problem", "vasp_elements",
]

#: engines :func:`engine_elements` knows without a model
KNOWN_ENGINES = ("emt", "chgnet", "vasp", "mace")


class InputProblem(MaterialError):
    """An input refused before any job runs (stage ``input``), with the file it came from."""

    source: str | None = Field(default=None, description="File the input was read from, when it was a file")

    def line(self) -> str:
        """One line: ``<file or material>: <reason>``."""
        who = self.material_id
        if self.source and self.source not in self.reason:
            named = self.material_id in (Path(self.source).stem, Path(self.source).name)
            who = self.source if named else f"{self.material_id} ({self.source})"
        return f"{who}: {self.reason}"


# ---------------------------------------------------------------------------------------------
# elements of an engine
# ---------------------------------------------------------------------------------------------
def engine_elements(
    engine: str | None, model_elements: Iterable[str] | None = None, model: Any = None, store: Any = None
) -> tuple[str, frozenset[str]] | None:
    """``(engine name, elements it handles)`` for the element check, or None (no check).

    ``engine``: ``emt``, ``chgnet``, ``vasp`` or ``mace``. For ``mace`` the elements are
    ``model_elements``, or those of ``model`` (a TrainingDoc or its dict, or a sha256 looked up
    in ``store``); without any of them the elements are not checked.
    """
    if engine is None:
        return None
    key = str(engine).lower()
    if key in ("emt", "chgnet"):
        return key, reference_engine_elements(key)
    if key == "vasp":
        from phonon_flows.engines.vasp import vasp_elements  # atomate2's VASP sets: heavy, optional

        return key, vasp_elements()
    if key == "mace":
        if model_elements is not None:
            return key, frozenset(model_elements)
        doc = None
        if isinstance(model, str) and store is not None:
            doc = training_doc_for(store, model.strip().lower())
            if doc is None:
                raise InputError(f"no trained model with sha256 {model} in the store", stage="input")
        elif model is not None and not isinstance(model, str):
            doc = model if isinstance(model, Mapping) else getattr(model, "__dict__", {})
        elements = (doc or {}).get("elements")
        return (key, frozenset(elements)) if elements else None
    raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(KNOWN_ENGINES)}", stage="input")


# ---------------------------------------------------------------------------------------------
# supercell size
# ---------------------------------------------------------------------------------------------
def supercell_problem(
    structure: Structure,
    min_atoms: int = MIN_ATOMS,
    max_atoms: int = MAX_ATOMS,
    max_supercell_atoms: int | None = None,
    material_id: str | None = None,
) -> str | None:
    """The reason ``structure``'s phonon supercell is refused, or None when it is fine.

    The supercell is chosen as the phonon jobs choose it (primitive cell, smallest compact
    supercell in the ``min_atoms``-``max_atoms`` window, 4x4x4 for one-atom primitive cells);
    it is refused when there is none or when it has more than ``max_supercell_atoms`` atoms
    (default ``max_atoms``).
    """
    limit = max_atoms if max_supercell_atoms is None else int(max_supercell_atoms)
    prim = primitive_cell(structure)
    if len(prim) > limit:
        return f"the primitive cell alone has {len(prim)} atoms, above the supercell limit of {limit} atoms"
    try:
        m = choose_supercell_matrix(prim, min_atoms, max_atoms, material_id=material_id)
    except PhononFlowsError as err:
        return err.reason
    n = round(abs(float(np.linalg.det(np.asarray(m))))) * len(prim)
    if n > limit:
        return f"its phonon supercell has {n} atoms, above the limit of {limit} atoms"
    return None


# ---------------------------------------------------------------------------------------------
# all the checks
# ---------------------------------------------------------------------------------------------
def expand_inputs(inputs: Iterable[Any]) -> list[Any]:
    """Inputs with each directory replaced by the files in it (sorted, hidden files left out)."""
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            out.extend(sorted(p for p in Path(item).iterdir() if p.is_file() and not p.name.startswith(".")))
        else:
            out.append(item)
    return out


def check_inputs(
    inputs: Sequence[Any] | Mapping[str, Any],
    engine: str | None = None,
    *,
    max_supercell_atoms: int | None = None,
    material_ids: Sequence[str] | None = None,
    model_elements: Iterable[str] | None = None,
    model: Any = None,
    store: Any = None,
    min_atoms: int = MIN_ATOMS,
    max_atoms: int = MAX_ATOMS,
    min_distance: float = MIN_DISTANCE,
    check_supercell: bool = True,
    drop_duplicates: bool = True,
) -> tuple[list[tuple[str, Structure]], list[InputProblem]]:
    """Check a list of inputs (structure files, folders of them, Structures, or a mapping id ->
    either) and split them into ``(good, problems)``.

    ``good``: ``[(material id, Structure)]`` in input order (ids: the mapping's keys,
    ``material_ids``, the file stems, or formula + hash for Structures). ``problems``: one
    :class:`InputProblem` per refused input (``problem.line()`` is the line to print).
    ``engine`` (``emt``, ``chgnet``, ``vasp``, ``mace`` with ``model_elements``/``model``) decides
    the element check; ``min_atoms``/``max_atoms`` the supercell window and
    ``max_supercell_atoms`` (default ``max_atoms``) the largest supercell accepted.

    Never raises for a bad input; raises :class:`InputError` for bad arguments (unknown engine,
    ids not matching the inputs).
    """
    items, ids, sources = _items_ids_sources(inputs, material_ids)
    if min_atoms < 1 or max_atoms < min_atoms:
        raise InputError(f"invalid supercell window: min_atoms={min_atoms}, max_atoms={max_atoms}", stage="input")
    engines = [e for e in (engine_elements(engine, model_elements, model, store),) if e]

    # one input at a time, so that each problem is matched to its file
    good: list[tuple[str, Structure, str | None]] = []
    problems: list[InputProblem] = []
    taken: set[str] = set()
    for i, (item, given, src) in enumerate(zip(items, ids, sources, strict=True)):
        if not isinstance(item, (str, Path, Structure)):
            problems.append(InputProblem(
                material_id=given or f"input #{i + 1}", stage="input",
                reason=f"expected a structure file or a pymatgen Structure, got {type(item).__name__}",
            ))
            continue
        try:
            ok, bad = prepare_materials(
                [item], [given] if given else None, min_distance=min_distance, engines=engines,
                check_duplicates=False,
            )
        except Exception as exc:  # noqa: BLE001 - a check that crashes refuses this input only
            name = given or (Path(src).name if src else f"input-{i}")
            problems.append(InputProblem(material_id=name, stage="input", reason=_crash_reason(exc), source=src))
            continue
        for err in bad:
            problems.append(InputProblem(material_id=err.material_id, stage="input", reason=err.reason, source=src))
        for mid, structure in ok:
            mid = unique_material_id(mid, taken)
            taken.add(mid)
            if check_supercell:
                try:
                    reason = supercell_problem(structure, min_atoms, max_atoms, max_supercell_atoms, mid)
                except Exception as exc:  # noqa: BLE001
                    reason = _crash_reason(exc)
                if reason:
                    problems.append(InputProblem(material_id=mid, stage="input", reason=reason, source=src))
                    continue
            good.append((mid, structure, src))

    if drop_duplicates:
        good = _drop_duplicates(good, problems)
    return [(mid, s) for mid, s, _ in good], problems


def _items_ids_sources(
    inputs: Sequence[Any] | Mapping[str, Any], material_ids: Sequence[str] | None
) -> tuple[list[Any], list[str | None], list[str | None]]:
    """The inputs (folders expanded), their ids (mapping keys, given ids or file stems) and the
    file each came from."""
    if isinstance(inputs, Mapping):
        ids: list[str | None] = [str(k) for k in inputs]
        items = list(inputs.values())
    else:
        items = expand_inputs(inputs if not isinstance(inputs, (str, Path)) else [inputs])
        if material_ids is not None:
            if len(material_ids) != len(items):
                raise InputError(f"{len(material_ids)} material ids for {len(items)} inputs", stage="input")
            ids = [str(m) if m else None for m in material_ids]
        else:
            ids = [Path(it).stem if isinstance(it, (str, Path)) else None for it in items]
    sources = [str(it) if isinstance(it, (str, Path)) else None for it in items]
    return items, ids, sources


def _drop_duplicates(good: list[tuple[str, Structure, str | None]], problems: list[InputProblem]) -> list:
    """``good`` without the materials that repeat an earlier one (each recorded in ``problems``)."""
    dups = find_duplicates([(mid, s) for mid, s, _ in good])
    src_of = {mid: src for mid, _, src in good}
    for mid, first in dups.items():
        problems.append(InputProblem(material_id=mid, stage="input", reason=duplicate_reason(first, src_of.get(first)),
                                     source=src_of.get(mid)))
    return [g for g in good if g[0] not in dups]


def _crash_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"cannot be checked ({type(exc).__name__}: {text[:200]})"


def problem_lines(problems: Iterable[MaterialError]) -> list[str]:
    """One line per problem (``InputProblem.line()``, or ``<material>: <reason>``)."""
    return [p.line() if isinstance(p, InputProblem) else f"{p.material_id}: {p.reason}" for p in problems]
