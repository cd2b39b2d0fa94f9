"""A small module for `council demo` to work on (copied to a temporary folder first)."""

import math


def circle_area(radius: float) -> float:
    """Area of a circle with the given radius.

    >>> circle_area(1.0)
    3.141592653589793
    >>> circle_area(0)
    0.0

    assert circle_area(2) == 4 * math.pi
    """
    if radius < 0:
        raise ValueError("radius must be >= 0")
    return math.pi * radius**2


def clamp(value: float, low: float, high: float) -> float:
    """Limit value to the range [low, high].

    >>> clamp(5, 0, 3)
    3
    """
    raise NotImplementedError
