"""The papers' small experiments and diagnostics: a second DVC pipeline (``experiments/dvc.yaml``).

* :mod:`.xor` — rep-spectral F.1 (XOR, Figs. 2-4);
* :mod:`.digits_mlp` — rep-spectral F.2 on the embedded digits (Figs. 5-6);
* :mod:`.diagnostics` — LR-paper / nuclear-norm-paper diagnostics of the main DAG's backbones;
* :mod:`.summary` — every claim next to what was measured, with a verdict.

Run one with ``python -m pipeline.experiments <command> --params experiments/params.yaml`` from
the repository root, or all with ``cd experiments && dvc repro``. Outputs go to
``reports/papers/``.
"""
