"""The campaign builder: collects the jobs of a campaign with their keys, stages, materials and
categories, and the job that records the campaign's document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobflow import Flow, Job, job

from phonon_flows.flows.keys import assign_key, job_key, jobs_of, key_uuid, settings_hash
from phonon_flows.makers.base import set_category
from phonon_flows.schemas.campaign import CampaignDoc, CampaignJob
from phonon_flows.store import tag_metadata

REFERENCE_NOTES = {
    "chgnet": "The reference is CHGNet 0.3.0, a pretrained universal potential standing in for DFT: NOT DFT.",
    "emt": "The reference is ASE's EMT, an empirical potential for tests: NOT DFT.",
    "vasp": "The reference is DFT (VASP, PBE) with the recipe's settings.",
    "harmonic-dft": "The reference is DFT: harmonic DFT (PBEsol, phonondb): labels F = -Φu from the force constants "
                    "of Togo's phonondb (VASP, PBEsol, 2018-04-17; A. Togo, phonondb (Kyoto University), CC-BY-4.0).",
}


def job_category(job: Job) -> str | None:
    return (job.config.manager_config or {}).get("_category")


@dataclass
class CampaignBuilder:
    """Collects the jobs of a campaign with their keys, stages and materials."""

    campaign: str
    jobs: list = field(default_factory=list)
    records: list = field(default_factory=list)

    def add(
        self,
        obj: Job | Flow,
        stage: str,
        material_id: str | None,
        material_hash: str | None,
        settings: str,
        category: str,
        split: str | None = None,
        name: str | None = None,
    ) -> tuple[Job | Flow, str]:
        key = job_key(self.campaign, material_hash, stage, settings)
        assign_key(obj, key)
        if name:
            obj.name = name
        for j in jobs_of(obj):
            if job_category(j) is None:
                set_category(j, category)
        tag_metadata(obj, campaign=self.campaign, material_id=material_id, stage=stage, key=key, split=split)
        self.jobs.append(obj)
        for j in jobs_of(obj):
            self.records.append(
                CampaignJob(uuid=j.uuid, name=j.name, stage=stage, material_id=material_id, category=job_category(j))
            )
        return obj, key


@job
def record_campaign(doc: Any) -> Any:
    """First job of a campaign: stores its CampaignDoc (materials, split, settings, jobs)."""
    return doc


def campaign_flow_uuid(campaign: str) -> str:
    """The deterministic uuid of a campaign's Flow."""
    return key_uuid(job_key(campaign, None, "campaign", "flow"))


def finish_campaign(b: CampaignBuilder, campaign_type: str, settings: dict[str, Any], output: Any,
                    **doc_fields: Any) -> Flow:
    """The campaign's Flow: its record job (the CampaignDoc with ``settings``, ``doc_fields`` and
    every job) is made last, because its key depends on every other key, and put first."""
    doc = CampaignDoc(
        campaign=b.campaign,
        campaign_type=campaign_type,
        settings=settings,
        settings_hash=settings_hash(settings, sorted(r.uuid for r in b.records)),
        **doc_fields,
    )
    rec = record_campaign(doc)
    b.add(rec, "campaign", None, None, doc.settings_hash, "cpu", name=f"campaign {b.campaign}")
    b.jobs.insert(0, b.jobs.pop())
    doc.jobs = [b.records[-1], *b.records[:-1]]
    rec.function_args = (doc,)
    flow = Flow(b.jobs, output=output, name=b.campaign, uuid=campaign_flow_uuid(b.campaign))
    flow.metadata = {"phonon_flows": {"campaign": b.campaign, "campaign_type": campaign_type}}
    return flow
