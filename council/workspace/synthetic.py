"""A synthetic Python workspace of any size, for `council bench index` and the tests.

Real projects of 5,000 files are not at hand on every machine, so one is generated: packages
of modules, each with imports of its siblings, constants, a dozen functions that call
functions of other modules, and classes with methods. Names are built from a fixed list of
syllables with a seeded random generator, so the same seed gives the same files, and the
name distribution is skewed (some words are common, most rare) as in real code. It is not
meant to be good code; it is meant to cost what real code costs to index and query.
"""

from __future__ import annotations

import random
from pathlib import Path

_SYLLABLES = [c + v for c in "bcdfgklmnprstvz" for v in "aeiou"] + ["an", "el", "is", "or"]


def _words(rng: random.Random, count: int) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen["".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3))))] = None
    return list(seen)


class _Names:
    def __init__(self, rng: random.Random, vocabulary: int) -> None:
        self.rng = rng
        self.words = _words(rng, vocabulary)

    def word(self) -> str:
        # skewed: low indices (common words) come up far more often than high ones
        return self.words[int(len(self.words) * self.rng.random() ** 2.5)]

    def snake(self, parts: int = 2) -> str:
        return "_".join(self.word() for _ in range(parts))

    def camel(self) -> str:
        return "".join(self.word().capitalize() for _ in range(2))


def _function(names: _Names, name: str, callees: list[str], indent: str = "") -> list[str]:
    rng = names.rng
    args = [names.snake(1) + f"_{i}" for i in range(rng.randint(1, 3))]
    lines = [
        f"{indent}def {name}({', '.join(args)}) -> int:",
        f'{indent}    """{names.word().capitalize()} the {names.word()} of {names.word()}."""',
        f"{indent}    {names.snake()} = {rng.choice(callees)}({args[0]})",
    ]
    for _ in range(rng.randint(2, 9)):
        var = names.snake()
        kind = rng.random()
        if kind < 0.3:
            lines += [
                f"{indent}    if {args[0]} > {rng.randint(0, 99)}:",
                f"{indent}        return {rng.choice(callees)}({var if rng.random() < 0.5 else 0})",
            ]
        elif kind < 0.6:
            lines += [
                f"{indent}    for {names.word()} in range({args[-1]}):",
                f"{indent}        {var} = {rng.choice(callees)}({args[0]}) + {rng.randint(1, 9)}",
            ]
        else:
            lines.append(f"{indent}    {var} = {rng.choice(callees)}({args[0]}, {names.word()}=1)")
    lines.append(f"{indent}    return {rng.randint(0, 9)}")
    return lines


def generate(root: Path, files: int = 5_000, *, seed: int = 0, per_package: int = 100) -> Path:
    """Write `files` modules under `root` (packages of `per_package` modules); returns root."""
    rng = random.Random(seed)
    names = _Names(rng, 4_000)
    root.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, str, list[str]]] = []  # package, module, its function names
    for i in range(files):
        package = f"pkg_{i // per_package:03d}"
        plan.append((package, f"mod_{names.snake(1)}_{i}", [names.snake() for _ in range(12)]))
    for package, module, functions in plan:
        folder = root / package
        if not folder.is_dir():
            folder.mkdir()
            (folder / "__init__.py").write_text(f'"""Package {package}."""\n')
        others = [plan[rng.randrange(len(plan))] for _ in range(3)]
        imported = [rng.choice(o[2]) for o in others]
        lines = [f'"""{module}: {names.word()} and {names.word()}."""', ""]
        lines += ["from __future__ import annotations", "", "import os"]
        lines += [f"from {o[0]}.{o[1]} import {f}" for o, f in zip(others, imported, strict=True)]
        lines += ["", f"{names.snake().upper()} = {rng.randint(1, 999)}", ""]
        callees = imported + functions
        for name in functions:
            lines += ["", *_function(names, name, callees), ""]
        for _ in range(2):
            lines += ["", f"class {names.camel()}:", f'    """The {names.word()}."""', ""]
            lines += [f"    {names.snake(1)} = {rng.randint(0, 9)}", ""]
            for _ in range(3):
                method = _function(names, names.snake(), callees, "    ")
                method[0] = method[0].replace("(", "(self, ", 1)
                lines += [*method, ""]
        (folder / f"{module}.py").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
