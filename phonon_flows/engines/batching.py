"""Batching across materials: the displaced supercells of several materials through one engine.

A screening job that holds a loaded model can pack the supercells of many materials into the
engine's batches (on a GPU this fills the device; on CPU it saves the per-material model load and
call overhead). :func:`compute_grouped` does that while keeping materials apart when something
goes wrong: a material whose elements the engine lacks, or whose structures make the engine fail,
gets its own error and the others still get their forces.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ase import Atoms

from phonon_flows.engines.base import ForceEngine, ForceResult
from phonon_flows.errors import CalculationError, PhononFlowsError

logger = logging.getLogger(__name__)


def compute_grouped(
    engine: ForceEngine,
    groups: Sequence[Sequence[Atoms]],
    material_ids: Sequence[str | None] | None = None,
) -> list[list[ForceResult] | PhononFlowsError]:
    """Energies/forces of several groups of structures (one group per material) in shared batches.

    Returns, per group, its list of :class:`ForceResult` (same order as the group's structures) or
    the :class:`PhononFlowsError` that stopped it. All groups that pass the element check go to
    ``engine.compute`` in one call (so the engine's batch sizing applies across materials); if that
    call fails, each group is retried on its own so that one material cannot sink the others.
    """
    groups = [list(g) for g in groups]
    ids = list(material_ids) if material_ids is not None else [None] * len(groups)
    if len(ids) != len(groups):
        raise ValueError(f"{len(groups)} groups of structures but {len(ids)} material ids")
    out: list[list[ForceResult] | PhononFlowsError | None] = [None] * len(groups)
    ok: list[int] = []
    for i, (group, mid) in enumerate(zip(groups, ids, strict=True)):
        try:
            for atoms in group:
                engine.check_elements(atoms.get_chemical_symbols(), mid)
        except PhononFlowsError as exc:
            out[i] = exc
        else:
            ok.append(i)

    flat = [atoms for i in ok for atoms in groups[i]]
    try:
        results = engine.compute(flat) if flat else []
    except Exception as exc:  # noqa: BLE001 - find out which material it was
        logger.warning("shared batch of %d materials failed (%s); computing them one by one", len(ok), exc)
        for i in ok:
            out[i] = _compute_one(engine, groups[i], ids[i])
    else:
        if len(results) != len(flat):
            raise CalculationError(f"engine returned {len(results)} results for {len(flat)} structures")
        start = 0
        for i in ok:
            n = len(groups[i])
            out[i] = results[start : start + n]
            start += n
    return out  # type: ignore[return-value]


def _compute_one(engine: ForceEngine, group: list[Atoms], material_id: str | None):
    try:
        return engine.compute(group, material_id=material_id)
    except PhononFlowsError as exc:
        return exc.with_material(material_id) if material_id else exc
    except Exception as exc:  # noqa: BLE001 - an engine crash fails this material only
        return CalculationError(f"force engine failed: {type(exc).__name__}: {exc}", material_id=material_id,
                                stage="phonon")
