"""The rule engine of the paper-claims summary: declared tests, Holm across claims, verdicts.

A claim declares, before any data is read (see :mod:`pipeline.experiments.claims`):

* ONE **primary** test: a paired difference ``a − b`` over seeds (the training run is the unit)
  with a claimed sign, or a conjunction of such differences (``AllOf``: "larger than none *and*
  than ll-spectral, at every weight decay"), an intersection-union test whose p-value is the
  largest of its parts' (Berger 1982: valid at the parts' level without any correction);
* optional **sub-claims** (e.g. "while the readout's σ_max grows"), each a test of the same kind;
* **exploratory** comparisons, printed with no verdict weight.

Each test is one-sided at level ``alpha`` in the claimed direction (``sign`` ±1), two-sided for
``sign = 0``; a "does not hurt" claim is a non-inferiority test, ``H0: a − b ≤ −margin``
(``margin > 0``). Per claim the summary then applies Holm's step-down adjustment across all
claims, separately to three families: the primaries, the primaries' opposite directions, and all
sub-claims. Verdicts (:func:`judge`):

* **reproduced**: the primary passes after Holm and so does every sub-claim;
* **partly reproduced**: the primary passes, some sub-claim does not (the reason names which);
* **contradicted**: the primary's opposite direction is significant after Holm;
* **not reproduced**: otherwise, including "not testable with n seeds" (n < 2);
* **descriptive, one run**: claims measured on one run per variant get no verdict at all;
* **not measured**: no data.

Nothing is decided from the sign of a mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.report.inference import TestResult, holm, paired_seed_test

REPRODUCED = "reproduced"
PARTLY = "partly reproduced"
NOT = "not reproduced"
CONTRADICTED = "contradicted"
DESCRIPTIVE = "descriptive, one run"
MISSING = "not measured"
VERDICTS = (REPRODUCED, PARTLY, CONTRADICTED, NOT, DESCRIPTIVE, MISSING)
ALPHA = 0.05


def _alternative(sign: int) -> str:
    return {1: "greater", -1: "less", 0: "two-sided"}[sign]


@dataclass
class Comparison:
    """``a − b`` paired over seeds, for a claimed sign (+1, −1; 0 = two-sided).

    ``margin > 0`` makes it a non-inferiority test in the claimed direction: the difference must
    be shown to lie above ``−margin`` (``sign = +1``), not merely to have the right sign.
    """

    label: str
    a: list[float]
    b: list[float]
    sign: int = 1
    margin: float = 0.0
    test: str = "t"

    def __post_init__(self) -> None:
        if self.sign not in (1, -1, 0):
            raise ValueError(f"sign must be +1, -1 or 0, got {self.sign}")
        if self.margin < 0 or (self.margin > 0 and self.sign == 0):
            raise ValueError("a margin needs a one-sided claim and must be >= 0")

    @property
    def diffs(self) -> np.ndarray:
        d = np.asarray(self.a, float) - np.asarray(self.b, float)
        return d[np.isfinite(d)]

    @property
    def n(self) -> int:
        return int(self.diffs.size)

    @property
    def mean_diff(self) -> float:
        return float(self.diffs.mean()) if self.n else math.nan

    @property
    def null(self) -> float:
        return -self.sign * self.margin

    def result(self, alpha: float = ALPHA, opposite: bool = False) -> TestResult:
        """The declared test (or its opposite direction), with the interval matching it.

        A one-sided test at ``alpha`` matches the two-sided ``1 − 2 alpha`` interval's bound.
        """
        sign = -self.sign if opposite else self.sign
        confidence = 1 - alpha if self.sign == 0 else 1 - 2 * alpha
        r = paired_seed_test(
            self.diffs, alternative=_alternative(sign), test=self.test, null=self.null,
            confidence=confidence,
        )  # fmt: skip
        if math.isnan(r.p) and self.n >= 2 and np.all(self.diffs == self.null):
            # Every seed exactly at the null (e.g. identical accuracies): t is 0/0, and the
            # data are no evidence for either direction.
            r = replace(r, p=1.0)
        return r

    def p(self, alpha: float = ALPHA) -> float:
        return self.result(alpha).p

    def p_opposite(self, alpha: float = ALPHA) -> float:
        """p of the opposite direction (NaN for a two-sided claim: it has none)."""
        return math.nan if self.sign == 0 else self.result(alpha, opposite=True).p

    def claim_text(self) -> str:
        if self.margin:
            return f"> {self.null:+.4g}" if self.sign > 0 else f"< {self.null:+.4g}"
        return {1: "> 0", -1: "< 0", 0: "≠ 0"}[self.sign]

    def describe(self, alpha: float = ALPHA, p: bool = True) -> str:
        """``label: mean (interval) [p]`` — the estimate and the bound the declared test uses."""
        if self.n == 0:
            return f"{self.label}: no data"
        if self.n < 2:
            return f"{self.label}: {self.mean_diff:+.4g} (one run, no test)"
        r = self.result(alpha)
        if self.sign == 0:
            bound = f"{100 * (1 - alpha):.0f}% CI [{r.low:+.4g}, {r.high:+.4g}]"
        else:
            value = r.low if self.sign > 0 else r.high
            side = "lower" if self.sign > 0 else "upper"
            bound = f"one-sided {100 * (1 - alpha):.0f}% {side} bound {value:+.4g}"
        text = f"{self.label} {self.claim_text()}: {r.estimate:+.4g} ({bound}, n={r.units} seeds"
        return text + (f", p={r.p:.3g})" if p else ")")


@dataclass
class AllOf:
    """Every part holds: intersection-union test, p = max of the parts' p (Berger 1982)."""

    label: str
    parts: list[Comparison]

    @property
    def n(self) -> int:
        """Seeds of the weakest part (0 when a part has no data)."""
        return min((c.n for c in self.parts), default=0)

    def p(self, alpha: float = ALPHA) -> float:
        ps = [c.p(alpha) for c in self.parts]
        return max(ps) if ps and not any(math.isnan(x) for x in ps) else math.nan

    def p_opposite(self, alpha: float = ALPHA) -> float:
        """Some part significantly reversed: Bonferroni over the parts (a union of nulls)."""
        ps = [c.p_opposite(alpha) for c in self.parts]
        ps = [x for x in ps if not math.isnan(x)]
        return min(1.0, len(self.parts) * min(ps)) if ps else math.nan

    def describe(self, alpha: float = ALPHA, p: bool = True) -> str:
        return "; ".join(c.describe(alpha, p) for c in self.parts)


Test = Comparison | AllOf


@dataclass
class Claim:
    """A paper statement with its declared tests; ``judge`` fills the verdict fields."""

    key: str
    source: str
    statement: str
    primary: Test | None = None
    subclaims: list[Test] = field(default_factory=list)
    exploratory: list[Comparison] = field(default_factory=list)
    descriptive: bool = False  # one run per variant: values shown, never judged
    measured: str = ""
    note: str = ""
    # filled by judge():
    verdict: str = MISSING
    reason: str = ""
    p_primary: float = math.nan  # Holm-adjusted
    p_opposite: float = math.nan  # Holm-adjusted
    p_sub: list[float] = field(default_factory=list)  # Holm-adjusted, one per sub-claim

    @property
    def testable(self) -> bool:
        return not self.descriptive and self.primary is not None and self.primary.n >= 2


def _holm_into(tests: list[float]) -> list[float]:
    return holm(tests) if tests else []


def judge(claims: Sequence[Claim], alpha: float = ALPHA) -> list[Claim]:
    """Holm across the claims (primaries, opposites, sub-claims), then each claim's verdict."""
    claims = list(claims)
    tested = [c for c in claims if c.testable]
    primaries = _holm_into([c.primary.p(alpha) for c in tested])
    opposites = _holm_into([c.primary.p_opposite(alpha) for c in tested])
    subs = _holm_into([s.p(alpha) for c in tested for s in c.subclaims])
    for c in claims:
        c.p_primary = c.p_opposite = math.nan
        c.p_sub = []
    i = 0
    for c, p, q in zip(tested, primaries, opposites, strict=True):
        c.p_primary, c.p_opposite = p, q
        c.p_sub = subs[i : i + len(c.subclaims)]
        i += len(c.subclaims)
    for c in claims:
        c.verdict, c.reason = _verdict(c, alpha)
    return claims


def _passes(p: float, alpha: float) -> bool:
    return not math.isnan(p) and p <= alpha


def _verdict(c: Claim, alpha: float) -> tuple[str, str]:
    if c.descriptive:
        has_data = c.primary is not None and c.primary.n > 0
        return (DESCRIPTIVE, "no test: one run per variant") if has_data else (MISSING, "")
    if c.primary is None or c.primary.n == 0:
        return MISSING, ""
    if c.primary.n < 2:
        return NOT, f"not testable with {c.primary.n} seed(s)"
    if math.isnan(c.p_primary):
        return NOT, "not testable: the test gave no p-value"
    if _passes(c.p_primary, alpha):
        labels = [s.label for s in c.subclaims]
        ok = [lab for lab, p in zip(labels, c.p_sub, strict=True) if _passes(p, alpha)]
        failed = [lab for lab in labels if lab not in ok]
        head = f"primary test passed (Holm p={c.p_primary:.3g} ≤ {alpha:g})"
        if not failed:
            return REPRODUCED, head + (f"; sub-claims passed: {', '.join(ok)}" if ok else "")
        passed = f"; sub-claims passed: {', '.join(ok)}" if ok else ""
        return PARTLY, f"{head}{passed}; sub-claims not shown: {', '.join(failed)}"
    if _passes(c.p_opposite, alpha):
        return CONTRADICTED, f"opposite direction significant (Holm p={c.p_opposite:.3g})"
    return NOT, f"primary test not passed (Holm p={c.p_primary:.3g} > {alpha:g})"


def tally(claims: Sequence[Claim]) -> str:
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    return f"{len(claims)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
