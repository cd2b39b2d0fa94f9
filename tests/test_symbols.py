"""council.symbols: the one resolver for "the symbol at the cursor" and "is it a stub"."""

from __future__ import annotations

import pytest

from council.examples import docstring_examples
from council.local import split_stub
from council.static import analyse
from council.symbols import (
    find_definition,
    find_symbol,
    parse,
    symbol_at,
    symbol_source,
    symbols,
)

MODULE = '''\
import functools


def outer(x):
    """Outer."""

    def inner(y):
        """Add x.

        >>> inner(1)
        2
        """
        raise NotImplementedError

    return inner


class Stack:
    """A stack."""

    def push(self, item):
        ...

    @functools.cache
    def top(self):
        """The top item.

        >>> Stack().top()
        """
        raise NotImplementedError("later")

    async def drain(self):
        pass

    class Node:
        def link(self, other):
            """Only a docstring."""


@functools.cache
async def fetch(url):
    """Fetch it."""
    pass


def done(a):
    """Real."""
    return a


def wordy():
    """Doc."""
    "more words"
    ...
'''

STUBS = {
    "outer.inner": "not-implemented",
    "Stack.push": "ellipsis",
    "Stack.top": "not-implemented",
    "Stack.drain": "pass",
    "Stack.Node.link": "empty",
    "fetch": "pass",
    "wordy": "ellipsis",
}


def test_every_definition_has_its_qualified_name_and_stub_form() -> None:
    found = {s.name: s for s in symbols(MODULE)}
    assert list(found) == [
        "outer",
        "outer.inner",
        "Stack",
        "Stack.push",
        "Stack.top",
        "Stack.drain",
        "Stack.Node",
        "Stack.Node.link",
        "fetch",
        "done",
        "wordy",
    ]
    assert {name: s.stub for name, s in found.items() if s.is_stub} == STUBS
    assert found["outer"].stub is None and found["done"].stub is None
    assert found["Stack"].kind == "class" and found["Stack.top"].kind == "function"
    assert not found["outer.inner"].importable and found["Stack.Node.link"].importable


@pytest.mark.parametrize(
    ("line_text", "expected"),
    [
        ("raise NotImplementedError\n", "outer.inner"),  # nested function body
        ("def push(self, item):", "Stack.push"),
        ("@functools.cache\n    def top", "Stack.top"),  # the decorator line belongs to it
        ("async def drain", "Stack.drain"),
        ('"""Only a docstring."""', "Stack.Node.link"),
        ("async def fetch", "fetch"),
        ("return inner", "outer"),
    ],
)
def test_symbol_at_is_the_innermost_definition(line_text: str, expected: str) -> None:
    line = MODULE[: MODULE.index(line_text)].count("\n")
    found = symbol_at(MODULE, line)
    assert found is not None and found.name == expected


def test_half_typed_text_falls_back_to_indentation_with_the_same_names() -> None:
    broken = MODULE + "\ndef half(:\n"
    assert parse(broken) is None
    names = [s.name for s in symbols(broken)]
    assert "outer.inner" in names and "Stack.Node.link" in names and "half" in names
    line = broken[: broken.index("raise NotImplementedError\n")].count("\n")
    assert symbol_at(broken, line).name == "outer.inner"  # type: ignore[union-attr]
    assert not {s.name for s in symbols(broken) if s.importable} & {"outer.inner"}


def test_find_definition_walks_classes_and_functions_and_the_last_wins() -> None:
    tree = parse(MODULE + "\n\ndef done(a):\n    return -a\n")
    assert tree is not None
    assert find_definition(tree, "outer.inner").lineno == 7  # type: ignore[union-attr]
    assert find_definition(tree, "Stack.Node.link") is not None
    assert find_definition(tree, "done").body[0].value.op  # type: ignore[union-attr]
    assert find_definition(tree, "Stack.missing") is None
    assert (
        find_symbol(MODULE, "Stack.top").start
        == MODULE[  # type: ignore[union-attr]
            : MODULE.index("    @functools.cache")
        ].count("\n")
    )


def test_loose_lookup_takes_a_bare_answer_for_a_qualified_name() -> None:
    answer = "def push(self, item):\n    self.items.append(item)\n"
    assert symbol_source(answer, "Stack.push") is None
    code, line = symbol_source(answer, "Stack.push", loose=True) or ("", 0)
    assert code == answer and line == 1
    nested = "def outer(x):\n    def inner(y):\n        return x + y\n    return inner\n"
    code, _ = symbol_source(nested, "outer.inner", loose=True) or ("", 0)
    assert code == "def inner(y):\n    return x + y\n"
    two = (
        "class A:\n    def push(self):\n        return 1\n\n"
        "class Stack:\n    def push(self):\n        return 2\n"
    )
    code, _ = symbol_source(two, "Stack.push", loose=True) or ("", 0)
    assert "return 2" in code  # the longest matching suffix wins
    assert symbol_source(answer, "Queue.pop", loose=True) is None


def test_intentional_stubs_are_not_stubs_to_fill() -> None:
    text = (
        "import abc\nfrom typing import overload\n\n"
        "class Base(abc.ABC):\n    @abc.abstractmethod\n    def run(self):\n        ...\n\n"
        "@overload\ndef f(x: int) -> int: ...\n"
    )
    assert not [s for s in symbols(text) if s.is_stub]
    assert not [f for f in analyse(text) if f.code == "stub-body"]


def test_static_analysis_reports_exactly_the_resolvers_stubs() -> None:
    reported = {f.line for f in analyse(MODULE) if f.code == "stub-body"}
    tree = parse(MODULE)
    assert tree is not None
    expected = {find_definition(tree, name).lineno for name in STUBS}  # type: ignore[union-attr]
    assert reported == expected


@pytest.mark.parametrize("name", sorted(STUBS))
def test_local_mode_splits_every_stub_form(name: str) -> None:
    split = split_stub(MODULE, name)
    assert split is not None, name
    prefix, suffix, indent = split
    filled = prefix + "return 42" + suffix
    assert parse(filled) is not None, f"{name}: {prefix[-40:]!r} | {suffix[:40]!r}"
    assert find_symbol(filled, name).stub is None  # type: ignore[union-attr]
    assert prefix.endswith("\n" + indent)
    had_doc = find_symbol(MODULE, name).has_docstring  # type: ignore[union-attr]
    assert find_symbol(filled, name).has_docstring == had_doc  # type: ignore[union-attr]


def test_split_stub_refuses_real_functions_and_unknown_names() -> None:
    assert split_stub(MODULE, "done") is None
    assert split_stub(MODULE, "outer") is None
    assert split_stub(MODULE, "nope") is None
    one_line = split_stub("def f(x): pass\n", "f")
    assert one_line == ("def f(x):\n    ", "\n", "    ")


def test_examples_of_a_nested_function_are_not_evidence() -> None:
    assert docstring_examples(MODULE, "outer.inner") == []  # cannot be run from the module
    assert [e.source for e in docstring_examples(MODULE, "Stack.top")] == ["Stack().top()"]
