"""The flows of phonon_flows, one module per idea:

- :mod:`~phonon_flows.flows.inputs`: read and check the input structures, resolve held-out materials;
- :mod:`~phonon_flows.flows.keys`: deterministic job keys and uuids;
- :mod:`~phonon_flows.flows.builder`: the campaign builder and the job recording a campaign;
- :mod:`~phonon_flows.flows.phonons`: the phonon jobs of a campaign (supercells, MACE, VASP);
- :mod:`~phonon_flows.flows.training_data`: :class:`TrainingDataMaker` (structures -> training set);
- :mod:`~phonon_flows.flows.training`: :class:`TrainingCampaignMaker` (training data -> MACE ->
  phonons of the held-out materials -> benchmark);
- :mod:`~phonon_flows.flows.screening`: :class:`ScreeningMaker` (new materials with a trained model).
"""

from phonon_flows.flows.builder import REFERENCE_NOTES, CampaignBuilder, record_campaign
from phonon_flows.flows.inputs import StructureInput, prepare_materials
from phonon_flows.flows.keys import (
    CAMPAIGN_STAGES,
    JOB_UUID_NAMESPACE,
    assign_key,
    job_key,
    key_uuid,
    settings_hash,
    settings_payload,
)
from phonon_flows.flows.phonons import with_model
from phonon_flows.flows.screening import ScreeningMaker, training_doc_for
from phonon_flows.flows.training import TrainingCampaignMaker
from phonon_flows.flows.training_data import TrainingDataMaker

__all__ = [
    "CAMPAIGN_STAGES",
    "JOB_UUID_NAMESPACE",
    "REFERENCE_NOTES",
    "CampaignBuilder",
    "ScreeningMaker",
    "StructureInput",
    "TrainingCampaignMaker",
    "TrainingDataMaker",
    "assign_key",
    "job_key",
    "key_uuid",
    "prepare_materials",
    "record_campaign",
    "settings_hash",
    "settings_payload",
    "training_doc_for",
    "with_model",
]
