"""One module per DAG stage; each is a thin ``run(cfg, **item)`` over the library.

Each module declares itself once (``ARGS``, ``STAGES``: see :mod:`pipeline.stages.spec`);
:mod:`pipeline.stages.registry` lists the modules in DAG order.
"""
