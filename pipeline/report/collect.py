"""Read every stage summary under ``metrics/``: pretraining rows and the attacked transfer models."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import ArtifactError, PipelineError

KINDS = ("finetune", "readout")
# Best-over-methods attack fields copied into each model's row (and results.csv).
ATTACK_FIELDS = (
    "n_samples",
    "mean_distance",
    "median_distance",
    "std_distance",
    "ci95_low",
    "ci95_high",
    "success_rate",
    "mean_queries",
)
METHOD_FIELDS = ("mean_distance", "median_distance", "success_rate", "mean_queries")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def planned_runs(cfg) -> dict[str, set[str]]:
    """Run ids the parameters' DAG produces, per stage kind: what the report may read.

    The matrices of the training and transfer stages, expanded from ``cfg`` alone (the report
    imports no stage module): a summary of a hand run outside the plan is never averaged in.
    """
    ft = cfg.finetune.run
    pre, ssl = cfg.pretrain.run, cfg.ssl.run if cfg.ssl else None
    finetune = {
        paths.finetune_id(t, b, bs, r, s)
        for t in ft.targets
        for b in ft.backbones
        for bs in ft.backbone_seeds
        for r in ft.regularizers
        for s in ft.seeds
    }
    readout = {
        paths.readout_id(t, b, bs)
        for t in ft.targets
        for b in ft.backbones
        for bs in ft.backbone_seeds
    }
    return {
        "pretrain": {paths.backbone_id(v, s) for v in pre.variants for s in pre.seeds},
        "ssl": {paths.backbone_id(v, s) for v in ssl.variants for s in ssl.seeds} if ssl else set(),
        "finetune": finetune,
        "readout": readout,
    }


def _summaries(root: Path, planned: set[str] | None = None) -> dict[str, dict]:
    """``run_id`` (the folder below ``root``) -> summary, in sorted order; only ``planned`` ids
    when given."""
    if not root.is_dir():
        return {}
    found = {p.parent.relative_to(root).as_posix(): p for p in sorted(root.rglob("summary.json"))}
    return {run: _read(p) for run, p in found.items() if planned is None or run in planned}


@dataclass(frozen=True)
class AttackedModel:
    """A finetuned or readout model with its own summary and, when attacked, the attack's."""

    kind: str  # finetune | readout
    run_id: str
    target: str
    backbone: str
    backbone_seed: int  # the pretraining seed: the unit of replication
    regularizer: str | None  # None for readout
    seed: int | None  # the finetuning seed, nested in backbone_seed; None for readout
    test_acc: float | None
    attack: dict  # the attack summary; {} when the model was not attacked
    samples: Path | None  # the attack's per-sample CSV, when present

    @property
    def variant(self) -> str:
        """What the paired comparisons pair up: (backbone, finetune regularizer) or the backbone."""
        return self.backbone if self.kind == "readout" else f"{self.backbone}/{self.regularizer}"

    @property
    def cell(self) -> tuple[int, int]:
        """(pretraining seed, finetuning seed): what a paired comparison pairs on."""
        return (self.backbone_seed, self.seed or 0)

    @property
    def methods(self) -> list[str]:
        return list(self.attack.get("methods") or self.attack.get("by_method") or [])

    def row(self, methods: list[str], budgets: list[int]) -> dict:
        """Flat row for results.csv: identity, accuracy, best-over-methods and per-method Δ."""
        row = {
            "stage": self.kind,
            "target": self.target,
            "backbone": self.backbone,
            "backbone_seed": self.backbone_seed,
            "regularizer": self.regularizer,
            "seed": self.seed,
            "test_acc": self.test_acc,
            **{f: self.attack.get(f) for f in ATTACK_FIELDS},
        }
        by_method = self.attack.get("by_method") or {}
        for m in methods:
            stats = by_method.get(m) or {}
            for f in METHOD_FIELDS:
                row[f"{f}_{m}"] = stats.get(f)
            at = stats.get("at_queries") or {}
            for b in budgets:
                row[f"at{b}_{m}"] = at.get(str(b))
        return row


def _model(kind: str, run_id: str, summary: dict, attacks: dict, metrics: Path) -> AttackedModel:
    attack = attacks.get(run_id, {})
    samples = metrics / "attack" / kind / run_id / "samples.csv"
    missing = [k for k in ("target", "backbone", "backbone_seed") if k not in summary]
    if missing:
        where = metrics / kind / run_id / "summary.json"
        raise PipelineError(f"{where}: missing key(s) {', '.join(missing)}")
    acc = summary.get("test_acc", attack.get("test_acc"))
    return AttackedModel(
        kind=kind,
        run_id=run_id,
        target=summary["target"],
        backbone=summary["backbone"],
        backbone_seed=int(summary["backbone_seed"]),
        regularizer=summary.get("regularizer") if kind == "finetune" else None,
        seed=summary.get("seed") if kind == "finetune" else None,
        test_acc=None if acc is None else float(acc),
        attack=attack,
        samples=samples if samples.is_file() else None,
    )


def collect_results(
    metrics: str | Path = "metrics", planned: dict[str, set[str]] | None = None
) -> dict:
    """``pretrain`` and ``ssl`` rows; ``models``: every finetune and readout run, attacked or not.

    Also ``methods`` (attack methods in order of first appearance) and ``budgets`` (query budgets
    of ``at_queries``, ascending), over the attack summaries. With ``planned``
    (:func:`planned_runs`), only those runs are read; ``ignored`` counts the others found.
    """
    metrics = Path(metrics)
    models: list[AttackedModel] = []
    methods: list[str] = []
    budgets: set[int] = set()
    only = planned or {}

    def read(kind: str, root: Path) -> dict[str, dict]:
        return _summaries(root, only.get(kind) if planned is not None else None)

    ignored = 0
    if planned is not None:  # counted by path: a corrupt file of a run outside is never read
        for kind in (*KINDS, "pretrain", "ssl"):
            root = metrics / kind
            runs = {p.parent.relative_to(root).as_posix() for p in root.rglob("summary.json")}
            ignored += len(runs - only.get(kind, set()))
    for kind in KINDS:
        attacks = read(kind, metrics / "attack" / kind)
        for attack in attacks.values():
            methods += [m for m in attack.get("methods") or [] if m not in methods]
            budgets |= {int(b) for b in attack.get("budgets") or []}
        models += [
            _model(kind, run_id, summary, attacks, metrics)
            for run_id, summary in read(kind, metrics / kind).items()
        ]
    return {
        "pretrain": list(read("pretrain", metrics / "pretrain").values()),
        "ssl": list(read("ssl", metrics / "ssl").values()),
        "ignored": ignored,
        "models": models,
        "methods": methods,
        "budgets": sorted(budgets),
    }


def sigma_history(path: Path) -> tuple[list[float], list[float]]:
    """``(epochs, Σ σ_max²)`` of a training history; a malformed file is an error naming it
    (raised before the report replaces anything, so the previous report stays whole)."""
    try:
        rows = [r for r in json.loads(path.read_text()) if "sum_sigma_max_sq" in r]
        pairs = [(float(r["epoch"]), float(r["sum_sigma_max_sq"])) for r in rows]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ArtifactError(f"{path}: not a training history ({type(exc).__name__}); "
                            "re-run its stage (dvc repro --force <stage>)") from None  # fmt: skip
    return [e for e, _ in pairs], [v for _, v in pairs]
