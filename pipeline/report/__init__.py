"""Tables and figures from the metrics files the stages write."""

from pipeline.report.collect import collect_results
from pipeline.report.figures import plot_pretrain_sigmas, plot_transfer
from pipeline.report.tables import aggregate, markdown_table

__all__ = [
    "aggregate",
    "collect_results",
    "markdown_table",
    "plot_pretrain_sigmas",
    "plot_transfer",
]
