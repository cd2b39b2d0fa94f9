"""The one output format every benchmark shares."""

from __future__ import annotations

import json
from typing import Any


def emit(report: dict[str, Any]) -> int:
    """Print the report as indented JSON on stdout; the exit status of a finished benchmark."""
    print(json.dumps(report, indent=2))
    return 0
