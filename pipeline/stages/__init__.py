"""One module per DAG stage; each is a thin ``run(cfg, **item)`` over the library.

Each module also states its ``contract(cfg, **item)``: the params, code/data deps and outputs
that ``dvc.yaml`` must declare for it. ``tests/test_dvc_contract.py`` keeps the two in step.
"""

STAGES = ("prepare", "pretrain", "ssl", "finetune", "readout", "attack", "report")
