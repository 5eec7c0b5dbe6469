"""Documents of a campaign as a whole: what it is made of (:class:`CampaignDoc`) and what went wrong
while it ran (:class:`JobFailureDoc`).

A :class:`CampaignDoc` is written by the campaign's first job: the materials, the split between
training and held-out materials (by material, never by structure), the inputs refused before any
job ran, the engines and settings, and the list of the campaign's jobs (uuid, material, stage), so
that ``phonon-flows status`` can tell done, failed and pending jobs apart from the store alone.

A :class:`JobFailureDoc` is what :func:`phonon_flows.runner.run_campaign` writes for a job that
raised (``state="failed"``) or that could not run because a job it needs failed
(``state="skipped"``). It lives in the output collection under its own uuid
(``failure-<job uuid>``), so it never stands in for the job's output, and it is removed once the
job succeeds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from phonon_flows.schemas.common import MaterialError

#: output["kind"] of the documents below, for queries
CAMPAIGN_KIND = "phonon_flows.campaign"
FAILURE_KIND = "phonon_flows.job_failure"
#: uuid prefix of failure records in the output collection
FAILURE_UUID_PREFIX = "failure-"
#: output["kind"] and uuid prefix of the marker a local run keeps in the store while a job runs
RUNNING_KIND = "phonon_flows.job_running"
RUNNING_UUID_PREFIX = "running-"


class CampaignMaterial(BaseModel):
    """One input material of a campaign."""

    material_id: str = Field(description="The material's id in the campaign")
    formula: str = Field(description="Reduced formula")
    split: Literal["train", "holdout", "screen"] = Field(description="Role of the material in the campaign")
    structure_hash: str = Field(description="sha256 of the input structure (see core.structures.structure_hash)")
    n_atoms: int = Field(description="Atoms in the (primitive) input cell")
    source: str | None = Field(default=None, description="File the structure was read from, when it was a file")
    supercell_matrix: list[list[int]] | None = Field(
        default=None, description="Supercell matrix of the phonon calculations (held-out/screened materials)"
    )


class CampaignJob(BaseModel):
    """One job of a campaign (the flows are static: every job is known when the campaign is made)."""

    uuid: str = Field(description="Deterministic job uuid (campaign, structure hash, stage, settings)")
    name: str = Field(description="Job name")
    stage: str = Field(description="Stage: campaign, relax, perturb, label, training-set, train, phonon-reference, ...")
    material_id: str | None = Field(default=None, description="Material of a per-material job; None for collecting jobs")
    category: str | None = Field(default=None, description="FireWorks category: gpu or cpu")


class CampaignDoc(BaseModel):
    """A campaign: its materials, their split, the settings, and its jobs."""

    kind: str = Field(default=CAMPAIGN_KIND, description="Document kind, for queries")
    campaign: str = Field(description="Campaign name")
    campaign_type: Literal["training", "screening"] = Field(description="Training campaign or screening of new materials")
    materials: list[CampaignMaterial] = Field(default_factory=list, description="Materials that passed the input checks")
    training_material_ids: list[str] = Field(default_factory=list, description="Materials whose perturbed supercells train the model")
    holdout_material_ids: list[str] = Field(
        default_factory=list, description="Held-out materials: phonons with the MLIP and with the reference, benchmarked"
    )
    screen_material_ids: list[str] = Field(default_factory=list, description="Materials screened with a trained model")
    input_failures: list[MaterialError] = Field(
        default_factory=list, description="Inputs refused before any job ran (stage 'input'), with the reason"
    )
    reference_engine: str | None = Field(default=None, description="Engine labelling and relaxing: vasp, chgnet or emt")
    reference_is_dft: bool | None = Field(default=None, description="True only when the reference is DFT (VASP)")
    reference_note: str | None = Field(default=None, description="Plain words on what the reference is")
    model_sha256: str | None = Field(default=None, description="sha256 of the MACE model used by a screening")
    settings: dict[str, Any] = Field(default_factory=dict, description="Settings of the campaign's makers")
    settings_hash: str = Field(description="sha256 of the settings")
    jobs: list[CampaignJob] = Field(default_factory=list, description="Every job of the campaign")


class JobFailureDoc(MaterialError):
    """A job that failed, or that was skipped because a job it needs failed."""

    kind: str = Field(default=FAILURE_KIND, description="Document kind, for queries")
    state: Literal["failed", "skipped"] = Field(description="failed: the job raised; skipped: an upstream job failed")
    campaign: str | None = Field(default=None, description="Campaign of the job")
    job_uuid: str = Field(description="uuid of the job")
    job_name: str = Field(description="Name of the job")
    upstream_uuid: str | None = Field(default=None, description="For a skipped job: the failed job it waited for")
    error_type: str | None = Field(default=None, description="Exception class name")
    traceback_tail: str | None = Field(default=None, description="Last lines of the traceback (full one in the job log)")
