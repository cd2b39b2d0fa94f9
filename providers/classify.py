"""Request classification for tier selection (seed 001's router model, seed 002's triage).

A tier may say `when = ["math"]`: it is only tried for requests carrying that tag. The tags
come from cheap rules by default: `math` or `general` from keywords, `large`/`small` from the
request size, and `lang:<name>` for the language. When a `router` role is configured (and
`router.classifier` is `auto` or `llm`), a small model picks the category instead, and the
rules remain the fallback if that call fails or answers nonsense.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ValidationError

CATEGORIES = ("math", "general")

_MATH = re.compile(
    r"\b(math\w*|algorithm\w*|equation|integral|derivative|matri(x|ces)|vector|statistic\w*|"
    r"probabilit\w*|prime|fibonacci|factorial|numerical|optimi[sz]\w*|regression|geometry|"
    r"calculus|linear algebra|dynamic programming|graph|shortest path|complexity|modular|"
    r"combinatori\w*|permutation|binary search|sorting|sort algorithm|gcd|lcm|polynomial)\b",
    re.I,
)

ROUTER_SYSTEM = (
    'You triage coding requests. Answer with JSON {"category": "math"} when the request is '
    'mainly mathematical, statistical or algorithmic, else {"category": "general"}.'
)


class Category(BaseModel):
    category: Literal["math", "general"]


def rule_tags(text: str, *, language: str | None = None, large_chars: int = 12_000) -> set[str]:
    tags = {"large" if len(text) > large_chars else "small"}
    tags.add("math" if len(_MATH.findall(text)) >= 1 else "general")
    if language:
        tags.add(f"lang:{language.lower()}")
    return tags


def parse_category(text: str) -> str | None:
    """Accept `{"category": ...}` or a bare word; None for anything else."""
    cleaned = text.strip().strip("`").strip()
    try:
        return Category.model_validate(json.loads(cleaned)).category
    except (ValueError, ValidationError):
        pass
    word = cleaned.lower().strip(" .\"'")
    return word if word in CATEGORIES else None
