"""The record of a pack of materials whose phonons one job computed with one loaded model.

The PhononDocs themselves are written by that job as documents of their own in the JobStore's
output collection (one per material, under the material's own deterministic uuid, tagged with the
campaign, material and stage ``phonon-mlip``), so that :class:`phonon_flows.results.PhononResults`,
``phonon-flows query`` and ``status`` see each material. This document is the job's own output:
which materials the pack held, which failed and why, and where the job's time went.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from phonon_flows.schemas.common import MaterialError

#: output["kind"] of a PhononBatchDoc, for queries
PHONON_BATCH_KIND = "phonon_flows.phonon_batch"
#: attribute of the log record of one finished material of a pack (the runner's progress bar shows
#: it): a dict with ``k`` and ``n`` (materials of the pack done / in the pack), ``material_id``,
#: ``failed``, ``n_supercells`` (displaced supercells) and ``seconds`` (its phonopy work and its
#: share of the shared force calls, s)
PACK_PROGRESS = "pack_progress"


class PhononBatchTimings(BaseModel):
    """Wall seconds of one pack, by step (the steps do not overlap unless phonopy workers ran)."""

    model_load_s: float = Field(default=0.0, description="Building the force engine (model load), s")
    prepare_s: float = Field(default=0.0, description="phonopy: cells, symmetry, displaced supercells, s")
    forces_s: float = Field(default=0.0, description="Inside the engine's force calls (all displaced supercells), s")
    finish_s: float = Field(default=0.0, description="phonopy: force constants, mesh, thermal, bands; documents, s")
    store_write_s: float = Field(default=0.0, description="Writing the PhononDocs (and their large data) to the store, s")
    total_s: float = Field(default=0.0, description="Whole job, s")

    @property
    def forces_share(self) -> float:
        """Share of the job's wall time spent inside the model's force calls."""
        return self.forces_s / self.total_s if self.total_s > 0 else 0.0


class PhononBatchDoc(BaseModel):
    """One job's pack of materials: their PhononDocs' uuids, failures and timings."""

    kind: str = Field(default=PHONON_BATCH_KIND, description="Document kind, for queries")
    material_ids: list[str] = Field(default_factory=list, description="Materials of the pack, in order")
    doc_uuids: list[str] = Field(default_factory=list,
                                 description="uuid of each material's PhononDoc in the output collection (same order)")
    n_computed: int = Field(default=0, description="Materials whose phonons this run computed")
    n_reused: int = Field(default=0, description="Materials whose PhononDoc was already in the store (not recomputed)")
    n_failed: int = Field(default=0, description="Materials whose PhononDoc says it failed")
    failed_materials: list[MaterialError] = Field(default_factory=list, description="Each failed material and why")
    failed: bool = Field(default=False, description="True when at least one material of the pack failed "
                                                    "(a rerun of the job retries those, and only those)")
    error: str | None = Field(default=None, description="One line naming the failed materials")
    n_supercells: int = Field(default=0, description="Displaced supercells whose forces this run computed")
    n_atoms: int = Field(default=0, description="Atoms in those supercells, summed")
    timings: PhononBatchTimings = Field(default_factory=PhononBatchTimings, description="Where the time went (s)")
