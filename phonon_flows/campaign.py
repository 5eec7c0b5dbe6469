"""Former home of the demo and of the campaign report, kept so that old imports still work.

The demo is in :mod:`phonon_flows.demo`; the campaign report in :mod:`phonon_flows.report.campaign`.
"""

from phonon_flows.demo import (
    DEMO_CAMPAIGN,
    DEMO_EPOCHS,
    DEMO_HOLDOUT,
    DEMO_MAX_ATOMS,
    DEMO_MIN_ATOMS,
    demo_campaign_maker,
    demo_structures,
)
from phonon_flows.report.campaign import CampaignReport, load_benchmark, stage_outputs, write_campaign_report

__all__ = [
    "DEMO_CAMPAIGN", "DEMO_EPOCHS", "DEMO_HOLDOUT", "DEMO_MAX_ATOMS", "DEMO_MIN_ATOMS", "CampaignReport",
    "demo_campaign_maker", "demo_structures", "load_benchmark", "stage_outputs", "write_campaign_report",
]
