"""Adversarially robust representation learning and transfer: the library behind the DAG.

Nothing here runs on import; stages live in :mod:`pipeline.stages`, the CLI in ``__main__``.
"""

__version__ = "0.1.0"
