"""Hard-label adversarial distance: a counting label oracle, boundary search, Tangent Attack and
HopSkipJump (batched), and the sample draw and summaries of the attack stage."""

from pipeline.attacks.boundary import AttackResult
from pipeline.attacks.hsja import hop_skip_jump
from pipeline.attacks.oracle import LabelOracle
from pipeline.attacks.search import SearchResult, binary_search, search_steps
from pipeline.attacks.tangent import TangentAttackResult, tangent_attack, tangent_point

__all__ = [
    "AttackResult",
    "LabelOracle",
    "SearchResult",
    "TangentAttackResult",
    "binary_search",
    "hop_skip_jump",
    "search_steps",
    "tangent_attack",
    "tangent_point",
]
