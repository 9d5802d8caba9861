"""What a flow run shows outside itself: its name, its report artifact, its DVC experiment.

* The run's name says which parameters it ran and when, so two runs of the same parameters
  are told apart: ``params.yaml attack.n_samples=8 · 2025-05-01 03:56:12Z · 6c7eead`` (the
  parameter file, the ``--set`` values, the UTC start and the checkout's short commit).
* The report, ``reports/transfer.md``, links its figures relatively (``figures/x.png``), which
  a Prefect UI cannot resolve: the ``transfer-report`` artifact embeds them as ``data:`` URIs,
  and any other relative link becomes plain text.
* The saved DVC experiment is named after the run, never replacing an earlier one: a name
  DVC already holds gets a ``-2``, ``-3`` ... suffix.
"""

from __future__ import annotations

import base64
import datetime as dt
import mimetypes
import re
import subprocess
import sys
from pathlib import Path

from pipeline.core.workspace import WORKSPACE_PARAMS

REPORT_KEY = "transfer-report"
# A markdown link or image target: ](target) or ](target "title").
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(\s*([^)\s]+)(\s+\"[^\"]*\")?\s*\)")
_RESOLVABLE = ("data:", "http://", "https://")


def run_label(params: str | None, overrides: list[str] | None, stamp: str) -> str:
    """``params.yaml a.b=1 · <stamp>``: which parameters, and which run of them."""
    name = Path(params or WORKSPACE_PARAMS).name
    sets = " ".join(overrides or [])
    return " ".join(p for p in (name, sets) if p) + f" · {stamp}"


def stamp(root: str | Path = ".") -> str:
    """``2025-05-01 03:56:12Z · 6c7eead``: the UTC time now and the checkout's short commit."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{now} · {commit or 'no git'}"


def experiment_name(label: str) -> str:
    """A DVC experiment name (a git ref component) for a run label, at most 100 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", label.replace("·", " "))
    name = re.sub(r"\.{2,}", ".", name).strip("-.")
    name = name[:100].rstrip("-.")
    if name.endswith(".lock"):
        name = name[: -len(".lock")]
    return f"flow-{name}" if name else "flow"


def save_experiment_as(log, name: str, root: str | Path = ".") -> str | None:
    """Record the finished run as a DVC experiment named ``name`` (``dvc exp show`` lists its
    metrics); a name already taken gets a suffix, never ``--force``. Returns the name saved."""
    for n in range(1, 20):
        candidate = name if n == 1 else f"{name}-{n}"
        # dvc.lock may be untracked (a first run): include it, it is the run's record.
        cmd = [sys.executable, "-m", "dvc", "exp", "save", "-n", candidate, "-I", "dvc.lock"]
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            log.info("saved as DVC experiment %s (dvc exp show)", candidate)
            return candidate
        if "conflicts with existing experiment" not in done.stderr:
            break
    log.warning("not saved as a DVC experiment: %s", done.stderr.strip().splitlines()[-1:])
    return None


def embed_links(markdown: str, base: Path) -> str:
    """The markdown with every link the UI could not resolve made self-contained: images
    (``![..](figures/x.png)``) as ``data:`` URIs, other relative links as their text."""

    def replace(m: re.Match) -> str:
        bang, text, target, title = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        if target.startswith(_RESOLVABLE):
            return m.group(0)
        path = base / target
        if bang and path.is_file():
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f"{bang}[{text}](data:{kind};base64,{data}{title})"
        return f"{text} (`{target}`)"  # no file to embed, nothing a UI could open

    return _LINK.sub(replace, markdown)


def publish_report(report: Path, log) -> None:
    """The report as the ``transfer-report`` markdown artifact, figures embedded."""
    if not report.is_file():
        return
    from prefect.artifacts import create_markdown_artifact

    markdown = embed_links(report.read_text(), report.parent)
    create_markdown_artifact(key=REPORT_KEY, markdown=markdown, description=str(report))
    log.info("report published as the artifact %s (%d kB)", REPORT_KEY, len(markdown) // 1024)
