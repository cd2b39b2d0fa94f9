"""Static analysis: findings, score, and locating/replacing one symbol in a file."""

from __future__ import annotations

import ast
import textwrap

import pytest

from council.static import Finding, analyse, score
from council.symbols import replace_symbol, symbol_source


def codes(source: str, **kwargs) -> list[tuple[int, str, str]]:
    return [(f.line, f.severity, f.code) for f in analyse(textwrap.dedent(source), **kwargs)]


# -- analyse ------------------------------------------------------------------------------------


def test_syntax_error_is_one_finding_with_position():
    findings = analyse("import os\n\ndef f(x:\n    return x\n")
    assert len(findings) == 1
    (finding,) = findings
    assert finding.severity == "error"
    assert finding.code == "syntax"
    assert finding.line == 3
    assert finding.column >= 0


def test_syntax_error_column_is_zero_based():
    (finding,) = analyse("x = (1, 2\ny = 3 +\n")
    assert finding.code == "syntax"
    try:
        compile("x = (1, 2\ny = 3 +\n", "<t>", "exec")
    except SyntaxError as error:
        assert (finding.line, finding.column) == (error.lineno, error.offset - 1)


def test_indentation_error_is_a_syntax_finding():
    assert codes("x = 1\n  y = 2\n") == [(2, "error", "syntax")]


def test_clean_code_has_no_findings():
    source = """
        import math


        def area(r: float) -> float:
            \"\"\"Area of a circle.\"\"\"
            return math.pi * r * r
    """
    assert analyse(textwrap.dedent(source)) == []


def test_undefined_name_is_an_error():
    assert codes("def f():\n    return helper(1)\n") == [(2, "error", "undefined-name")]


def test_known_names_are_not_undefined():
    assert codes("def f():\n    return helper(1)\n", known_names=["helper"]) == []
    assert codes("def f():\n    return helper(other)\n", known_names={"helper"}) == [
        (2, "error", "undefined-name")
    ]


def test_unused_import_is_a_warning():
    (finding,) = analyse("import os\nimport sys\n\nprint(sys.argv)\n")
    assert (finding.line, finding.severity, finding.code) == (1, "warning", "unused-import")
    assert "os" in finding.message


def test_unused_variable_and_redefinition_are_warnings():
    source = """
        def f():
            unused = 1
            return 2


        def g():
            return 1


        def g():
            return 2
    """
    assert codes(source) == [(3, "warning", "unused-variable"), (11, "warning", "redefined")]


def test_return_outside_function_and_duplicate_argument_are_errors():
    assert codes("return 1\n") == [(1, "error", "return-outside-function")]
    assert (1, "error", "duplicate-argument") in codes("def f(a, a):\n    return a\n")


def test_compiler_only_errors_are_reported():
    assert codes("nonlocal x\n") == [(1, "error", "syntax")]


def test_unreachable_code_after_return_raise_break_continue():
    source = """
        def f(xs):
            for x in xs:
                if x:
                    continue
                    print("never")
                break
                print("never")
            raise ValueError(xs)
            return None
    """
    found = [(line, code) for line, _, code in codes(source) if code == "unreachable"]
    assert found == [(6, "unreachable"), (8, "unreachable"), (10, "unreachable")]
    assert all(f.severity == "warning" for f in analyse(textwrap.dedent(source)))


def test_unreachable_is_reported_once_per_block():
    source = "def f():\n    return 1\n    a = 2\n    b = 3\n    return a + b\n"
    assert [c for c in codes(source) if c[2] == "unreachable"] == [(3, "warning", "unreachable")]


@pytest.mark.parametrize(
    "body",
    ["pass", "...", '"""Only a docstring."""', '"""Doc."""\n    pass', "raise NotImplementedError"],
)
def test_stub_body_is_info(body):
    source = f"def todo(x):\n    {body}\n"
    assert codes(source) == [(1, "info", "stub-body")]


def test_abstract_and_overload_stubs_are_not_reported():
    source = """
        from abc import ABC, abstractmethod
        from typing import overload


        class Base(ABC):
            @abstractmethod
            def run(self) -> None: ...


        @overload
        def f(x: int) -> int: ...
        @overload
        def f(x: str) -> str: ...
        def f(x):
            return x
    """
    assert [c for c in codes(source) if c[2] == "stub-body"] == []


def test_mutable_defaults_are_warnings():
    source = """
        def f(a, b=[], *, c={}, d=set(), e=(), f=None, g=frozenset()):
            return a, b, c, d, e, f, g
    """
    assert codes(source) == [(2, "warning", "mutable-default")] * 3


def test_bare_except_is_a_warning():
    source = """
        def f():
            try:
                return 1
            except ValueError:
                return 2
            except:
                return 3
    """
    assert codes(source) == [(7, "warning", "bare-except")]


def test_none_comparison_with_equality_is_info():
    source = "def f(x):\n    return x == None, None != x, x is None\n"
    assert codes(source) == [(2, "info", "none-comparison")] * 2


def test_findings_are_sorted_and_unique():
    source = """
        import os
        def f(x=[]):
            try:
                return undefined_thing
            except:
                pass
    """
    findings = analyse(textwrap.dedent(source))
    keys = [(f.line, f.column) for f in findings]
    assert keys == sorted(keys)
    assert len({f.model_dump_json() for f in findings}) == len(findings)
    assert {f.code for f in findings} >= {"unused-import", "mutable-default", "undefined-name"}


# -- score ----------------------------------------------------------------------------------------


def test_score_orders_clean_above_warnings_above_errors():
    clean = score(analyse("def f(x):\n    return x + 1\n"))
    warnings = score(analyse("import os\n\n\ndef f(x=[]):\n    return x\n"))
    error = score(analyse("def f(x):\n    return y\n"))
    syntax = score(analyse("def f(x:\n"))
    assert clean == 1.0
    assert clean > warnings > error
    assert error == syntax == 0.5


def test_score_weights_and_floor():
    def finding(severity):
        return Finding(line=1, severity=severity, code="x", message="x")

    assert score([]) == 1.0
    assert score([finding("warning")] * 2) == pytest.approx(0.8)
    assert score([finding("info")]) == pytest.approx(0.98)
    assert score([finding("error")] * 3) == 0.0


# -- symbol_source / replace_symbol ------------------------------------------------------------

MODULE = '''\
"""A module."""

import functools


def first(x):
    return x


@functools.lru_cache(maxsize=None)
@staticmethod
def cached(n):
    return n * 2


class Stack:
    """A stack."""

    def __init__(self):
        self.items = []

    @property
    def top(self):
        return self.items[-1]

    def push(self, item):
        text = """keep
this"""
        self.items.append(item)


def last():
    return 0
'''


def test_symbol_source_top_level_function():
    text, line = symbol_source(MODULE, "first")
    assert line == 6
    assert text == "def first(x):\n    return x\n"


def test_symbol_source_includes_decorators():
    text, line = symbol_source(MODULE, "cached")
    assert line == 10
    assert text.startswith("@functools.lru_cache(maxsize=None)\n@staticmethod\ndef cached(n):")


def test_symbol_source_method_is_dedented_and_parses():
    text, line = symbol_source(MODULE, "Stack.push")
    assert line == 26
    assert text.startswith("def push(self, item):\n")
    assert '"""keep\nthis"""' in text  # string content untouched by dedenting
    ast.parse(text)
    text, line = symbol_source(MODULE, "Stack.top")
    assert (line, text.splitlines()[0]) == (22, "@property")


def test_symbol_source_absent_or_unparsable():
    assert symbol_source(MODULE, "missing") is None
    assert symbol_source(MODULE, "Stack.missing") is None
    assert symbol_source(MODULE, "first.inner") is None
    assert symbol_source("def f(:\n", "f") is None


def test_replace_top_level_function():
    result = replace_symbol(MODULE, "first", "def first(x):\n    return x + 1\n")
    assert "    return x + 1\n" in result
    assert "    return x\n\n" not in result
    assert result.count("def first") == 1
    assert symbol_source(result, "last") == ("def last():\n    return 0\n", 32)


def test_replace_decorated_function_replaces_decorators_too():
    result = replace_symbol(MODULE, "cached", "def cached(n):\n    return n * 3\n")
    assert "lru_cache" not in result
    assert "@staticmethod" not in result
    assert symbol_source(result, "cached") == ("def cached(n):\n    return n * 3\n", 10)
    ast.parse(result)


def test_replace_method_reindents_to_class_level():
    new = 'def push(self, item):\n    """Push."""\n    self.items.insert(0, item)\n'
    result = replace_symbol(MODULE, "Stack.push", new)
    assert '    def push(self, item):\n        """Push."""\n' in result
    assert "        self.items.insert(0, item)\n" in result
    assert "\n\n\ndef last():" in result  # the rest of the file is untouched
    tree = ast.parse(result)
    stack = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    assert [n.name for n in stack.body if isinstance(n, ast.FunctionDef)] == [
        "__init__",
        "top",
        "push",
    ]


def test_replace_method_accepts_over_indented_code_and_keeps_strings():
    new = '        def push(self, item):\n            text = """a\nb"""\n            return text\n'
    result = replace_symbol(MODULE, "Stack.push", new)
    assert '    def push(self, item):\n        text = """a\nb"""\n        return text\n' in result
    ast.parse(result)


def test_replace_preserves_crlf_and_missing_final_newline():
    source = "def a():\r\n    return 1\r\n\r\ndef b():\r\n    return 2"
    result = replace_symbol(source, "b", "def b():\n    return 3\n")
    assert result == "def a():\r\n    return 1\r\n\r\ndef b():\r\n    return 3"


def test_replace_missing_symbol_raises_key_error():
    with pytest.raises(KeyError):
        replace_symbol(MODULE, "nope", "def nope():\n    pass\n")
    with pytest.raises(KeyError):
        replace_symbol(MODULE, "Stack.nope", "def nope(self):\n    pass\n")
    with pytest.raises(KeyError):
        replace_symbol("def f(:\n", "f", "def f():\n    pass\n")
