"""``dvc.yaml``, generated from the stage declarations (:mod:`pipeline.stages.registry`).

The file stays a real DVC file: matrix stages over the parameter lists of ``params.yaml``, so
``dvc repro`` and ``dvc exp run -S finetune.run.seeds='[0,1,2]'`` drive it as usual. It is
written by ``python -m pipeline dvc-yaml``; ``--check`` fails when the committed file differs
(and ``tests/test_dvc_contract.py`` does). Each stage's code dependencies are derived from its
module's imports (:attr:`~pipeline.stages.spec.StageSpec.code_deps`), sorted, so the same source
always gives the same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from pipeline.stages.registry import overlays, stage_specs
from pipeline.stages.spec import StageSpec, to_dvc

HEADER = """\
# The transfer DAG. GENERATED from the stage declarations in pipeline/stages/*.py
# (`python -m pipeline dvc-yaml`); edit those, not this file. tests/test_dvc_contract.py checks it.
# Code deps are derived, not declared: the project files a stage's module imports, at module level
# or in functions (pipeline/core/codedeps.py), a folder only where every file in it is imported.
# The CLI entry, its help text, the run lock, the launcher and the stage registry are left out.
"""


def _command(spec: StageSpec) -> str:
    words = ["python -m pipeline", spec.command]
    words += [f"--{k} {v}" for k, v in spec.fixed.items()]
    words += [f"--{arg} ${{item.{arg}}}" for arg in spec.matrix]
    return " ".join(words)


def stanza(spec: StageSpec) -> dict:
    """One stage of ``dvc.yaml`` as a plain mapping."""
    body: dict = {}
    if spec.matrix:
        body["matrix"] = {arg: "${" + key + "}" for arg, key in spec.matrix.items()}
    body["cmd"] = _command(spec)
    if spec.params:
        body["params"] = [to_dvc(p) for p in spec.params]
    body["deps"] = [*spec.code_deps, *(to_dvc(d) for d in spec.deps)]
    if spec.outs:
        body["outs"] = [to_dvc(o) for o in spec.outs]
    if spec.metrics:
        body["metrics"] = [to_dvc(m) for m in spec.metrics]
    if spec.plots:
        body["plots"] = [{to_dvc(p.path): {"x": p.x, "y": p.y}} for p in spec.plots]
    return body


def render() -> str:
    """The full text of ``dvc.yaml``."""
    blocks = []
    for spec in stage_specs():
        text = yaml.safe_dump(
            {spec.name: stanza(spec)}, sort_keys=False, width=1000, default_flow_style=False
        )
        blocks.append("\n".join("  " + line for line in text.splitlines()))
    return HEADER + "stages:\n" + "\n\n".join(blocks) + "\n" + _plots()


def _plots() -> str:
    """The top-level ``plots``: charts that overlay the variants (templates in ``.dvc/plots``)."""
    charts = [
        {o.path: {"template": o.template, "x": o.x, "y": o.y, "title": o.title}} for o in overlays()
    ]
    if not charts:
        return ""
    text = yaml.safe_dump({"plots": charts}, sort_keys=False, width=1000, allow_unicode=True)
    return "\n" + text


def main(argv: list[str]) -> int:
    """``python -m pipeline dvc-yaml [--check] [--out dvc.yaml]``."""
    from pipeline.core.cli import make_parser

    parser = make_parser("python -m pipeline dvc-yaml", __doc__.splitlines()[0], params=False)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--out", default="dvc.yaml")
    ns = parser.parse_args(argv)
    text, path = render(), Path(ns.out)
    if ns.check:
        if not path.is_file() or path.read_text() != text:
            print(
                f"error: {path} is out of date; run `python -m pipeline dvc-yaml`", file=sys.stderr
            )
            return 1
        return 0
    from pipeline.core.io import atomic_write_text

    atomic_write_text(path, text)
    print(f"wrote {path}")
    return 0
