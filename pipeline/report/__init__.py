"""Tables, statistics and figures from the metrics files the stages write."""

from pipeline.report.collect import AttackedModel, collect_results
from pipeline.report.compare import PairedComparison, compare_with_baseline, paired_differences
from pipeline.report.figures import plot_pretrain_sigmas, plot_queries, plot_tradeoff, plot_transfer
from pipeline.report.findings import claim_check, ranking_sentence, tradeoff_winner
from pipeline.report.stats import IntervalOptions, mean_std, stratified_mean_interval
from pipeline.report.tables import comparison_table, markdown_table
from pipeline.report.variants import summarize_variants

__all__ = [
    "AttackedModel",
    "IntervalOptions",
    "PairedComparison",
    "claim_check",
    "collect_results",
    "compare_with_baseline",
    "comparison_table",
    "markdown_table",
    "mean_std",
    "paired_differences",
    "plot_pretrain_sigmas",
    "plot_queries",
    "plot_tradeoff",
    "plot_transfer",
    "ranking_sentence",
    "stratified_mean_interval",
    "summarize_variants",
    "tradeoff_winner",
]
