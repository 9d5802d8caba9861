"""Rules that tie keys of different sections together, checked for what a command runs.

The schema (:mod:`pipeline.core.config`) checks each value on its own; a rule here relates
several (a regularizer's burn-in against the epochs, the attack's budgets against its query
limit) and applies only when every key it relates is read by the command, so no command is
refused for a value it does not read. The CLI checks an instance's keys before it runs, the plan
those of every instance (:func:`check_reads`).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.core.config import SEED_MAX, Config
from pipeline.core.config_errors import override_behind
from pipeline.core.errors import ConfigError


def check_seed(key: str, value: int) -> int:
    """A seed within the range every generator takes; ConfigError naming ``key`` otherwise."""
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key}: seed {value} is out of range; allowed: 0..2**31-1")
    return value


def cross_key_problems(cfg: Config, reads: list[str]) -> list[tuple[str, str]]:
    """``(key, message)`` for each rule broken among the keys in ``reads``.

    ``reads`` are dotted parameter keys (a stage instance's ``params``, or those of every
    instance of a plan): a rule applies when every key it relates lies in one of them, so a
    command is never refused for a value it does not read (a variant it does not train).
    """

    def read(key: str) -> bool:
        return any(key == r or key.startswith(r + ".") for r in reads)

    return [
        *_burn_in_problems(cfg, read),
        *_model_size_problems(cfg, read),
        *_attack_problems(cfg, read),
        *_seed_problems(cfg, read),
    ]


def _burn_in_problems(cfg: Config, read: Callable[[str], bool]) -> list[tuple[str, str]]:
    """A regularizer whose burn-in is not below its stage's epochs would never switch on."""
    burn_in = [
        (f"pretrain.variants.{v}", regs, "pretrain.train.epochs", cfg.pretrain.train.epochs)
        for v, regs in cfg.pretrain.variants.items()
    ]
    if cfg.ssl:
        burn_in += [
            (f"ssl.variants.{v}.regularizers", var.regularizers, "ssl.train.epochs",
             cfg.ssl.train.epochs)
            for v, var in cfg.ssl.variants.items()
        ]  # fmt: skip
    burn_in += [
        (f"finetune.regularizers.{r}", regs, f"finetune.targets.{t}.train.epochs",
         target.train.epochs)
        for r, regs in cfg.finetune.regularizers.items()
        for t, target in cfg.finetune.targets.items()
    ]  # fmt: skip
    found = []
    for key, regularizers, epochs_key, epochs in burn_in:
        if not (read(key) and read(epochs_key)):
            continue
        for i, reg in enumerate(regularizers):
            if reg.burn_in >= epochs:  # it would never switch on
                found.append((
                    f"{key}.{i}.burn_in",
                    f"{reg.burn_in} is not below {epochs_key} ({epochs}), so {reg.name} would "
                    f"never switch on; allowed: 0..{epochs - 1}",
                ))  # fmt: skip
    return found


def _model_size_problems(cfg: Config, read: Callable[[str], bool]) -> list[tuple[str, str]]:
    found = []
    for section in ("pretrain", "ssl"):
        spec = getattr(cfg, section)
        if spec is None or not read(f"{section}.model"):
            continue
        model = spec.model
        # Only the sizes the architecture builds: widths/blocks for small_resnet, hidden for mlp.
        sizes = {"small_resnet": ("widths", "blocks"), "mlp": ("hidden",)}.get(model.arch, ())
        for name in sizes:
            values = getattr(model, name)
            if any(v < 1 for v in values):
                found.append((f"{section}.model.{name}", f"every entry must be >= 1, got {values}"))
    return found


def _attack_problems(cfg: Config, read: Callable[[str], bool]) -> list[tuple[str, str]]:
    """A query limit below the largest budget: that budget could never be reached."""
    attack = cfg.attack
    limit = attack.max_queries
    unreachable = limit is not None and attack.budgets[-1] > limit
    if not (unreachable and read("attack.budgets") and read("attack.max_queries")):
        return []
    return [(
        "attack.max_queries",
        f"{limit} is below the largest of attack.budgets {attack.budgets}, which could "
        f"never be reached; allowed: >= {attack.budgets[-1]}, or null (the largest budget)",
    )]  # fmt: skip


def _seed_problems(cfg: Config, read: Callable[[str], bool]) -> list[tuple[str, str]]:
    seeds = [("attack.seed", cfg.attack.seed), ("report.seed", cfg.report.seed)]
    seeds += [
        (f"prepare.outputs.{n}.shuffle_seed", out.shuffle_seed)
        for n, out in cfg.prepare.outputs.items()
        if out.shuffle_seed is not None
    ]
    return [
        (key, f"seed {value} is out of range; allowed: 0..2**31-1")
        for key, value in seeds
        if read(key) and not 0 <= value <= SEED_MAX
    ]


def check_reads(cfg: Config, reads: list[str]) -> None:
    """ConfigError for the first rule :func:`cross_key_problems` finds broken, labelled like a
    schema error (by the ``--set`` behind it, else by the parameter file)."""
    found = cross_key_problems(cfg, reads)
    if found:
        key, text = found[0]
        msg = f"{key}: {text}"
        label = override_behind(key, msg, cfg._overrides) or cfg._source
        more = f" [+{len(found) - 1} more problem(s)]" if len(found) > 1 else ""
        raise ConfigError(f"{label}: {msg}{more}")
