"""Tables, statistics and figures from the metrics files the stages write.

The package imports none of its modules, so a caller of one (the experiments use
:func:`pipeline.report.stats.mean_std`) depends on that module alone.
"""
