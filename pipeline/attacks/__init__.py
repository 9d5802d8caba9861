"""Hard-label adversarial distance: a counting label oracle, boundary search, Tangent Attack."""

from pipeline.attacks.oracle import LabelOracle
from pipeline.attacks.search import SearchResult, binary_search, search_steps
from pipeline.attacks.tangent import TangentAttackResult, tangent_attack, tangent_point

__all__ = [
    "LabelOracle",
    "SearchResult",
    "TangentAttackResult",
    "binary_search",
    "search_steps",
    "tangent_attack",
    "tangent_point",
]
