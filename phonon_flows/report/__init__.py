"""Figures and reports.

- :mod:`phonon_flows.report.figures`: the figures (PNG) and tables of a BenchmarkDoc (used by the
  benchmark job);
- :mod:`phonon_flows.report.campaign`: the report of a training campaign read back from the store
  (:func:`~phonon_flows.report.campaign.write_campaign_report`).

The figure functions are importable from here (``from phonon_flows import report;
report.parity_plot(...)``). The campaign report sits a layer higher (it reads campaigns with
:mod:`phonon_flows.runner`): import it from :mod:`phonon_flows.report.campaign`.
"""

from phonon_flows.report.figures import (
    ANNOTATE_MAX,
    DPI,
    SCATTER_MAX,
    band_structure_plot,
    confusion_matrix_plot,
    learning_curve_plot,
    paper_metrics,
    paper_metrics_dict,
    paper_metrics_table,
    parity_plot,
    polymorph_plot,
    render_paper_metrics,
    safe_name,
    write_benchmark_figures,
)

__all__ = [
    "ANNOTATE_MAX",
    "DPI",
    "SCATTER_MAX",
    "band_structure_plot",
    "confusion_matrix_plot",
    "learning_curve_plot",
    "paper_metrics",
    "paper_metrics_dict",
    "paper_metrics_table",
    "parity_plot",
    "polymorph_plot",
    "render_paper_metrics",
    "safe_name",
    "write_benchmark_figures",
]
