"""Code actions on Python documents.

Actions are lazy: each is a `Command` that runs the council only when chosen, so listing
them costs a parse of the document and nothing else. Kinds let clients filter with
`context.only`:

- `refactor.rewrite.council.generate`: Generate implementation (a selection, a stub function
  with a docstring and `pass`/`...`/`raise NotImplementedError`, or a `# TODO` line);
- `refactor.council.debug` (and `quickfix.council.debug` on diagnostics in range): Debug the
  function at the cursor;
- `source.council.addTests`: Add tests for the function or class at the cursor;
- `quickfix.council.fix`: apply the fix of a council diagnostic (a direct edit).
"""

from __future__ import annotations

from lsprotocol import types

from council.symbols import symbol_at, todo_at
from server.app import CouncilServer
from server.diagnostics import SOURCE, published
from server.features.commands import ADD_TESTS, DEBUG, GENERATE

KIND_GENERATE = "refactor.rewrite.council.generate"
KIND_DEBUG = "refactor.council.debug"
KIND_DEBUG_FIX = "quickfix.council.debug"
KIND_TESTS = "source.council.addTests"
KIND_FIX = "quickfix.council.fix"
KINDS = [KIND_GENERATE, KIND_DEBUG, KIND_DEBUG_FIX, KIND_TESTS, KIND_FIX]


def _wanted(kind: str, only: list[str] | None) -> bool:
    return not only or any(kind == o or kind.startswith(o + ".") for o in only)


def _is_python(uri: str, language_id: str | None) -> bool:
    return language_id == "python" or uri.endswith((".py", ".pyi"))


def _pos(p: types.Position) -> dict[str, int]:
    return {"line": p.line, "character": p.character}


def setup(server: CouncilServer) -> None:
    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=False),
    )
    def code_actions(
        ls: CouncilServer, params: types.CodeActionParams
    ) -> list[types.CodeAction] | None:
        uri = params.text_document.uri
        doc = ls.workspace.get_text_document(uri)
        if not _is_python(uri, doc.language_id):
            return None
        try:
            text = doc.source
        except OSError:
            return None
        only = [str(k) for k in params.context.only] if params.context.only else None
        line = params.range.start.line
        actions: list[types.CodeAction] = []
        selected = params.range.start != params.range.end
        symbol = symbol_at(text, line)

        def add(
            title: str,
            kind: str,
            command: str,
            args: dict[str, object],
            diagnostics: list[types.Diagnostic] | None = None,
        ) -> None:
            if _wanted(kind, only):
                actions.append(
                    types.CodeAction(
                        title=title,
                        kind=kind,
                        diagnostics=diagnostics,
                        command=types.Command(title=title, command=command, arguments=[args]),
                    )
                )

        if selected:
            add(
                "Council: Generate implementation for the selection",
                KIND_GENERATE,
                GENERATE,
                {
                    "uri": uri,
                    "range": {"start": _pos(params.range.start), "end": _pos(params.range.end)},
                },
            )
        elif symbol and symbol.kind == "function" and symbol.is_stub:
            add(
                f"Council: Generate implementation of {symbol.name}",
                KIND_GENERATE,
                GENERATE,
                {"uri": uri, "symbol": symbol.name},
            )
        elif (todo := todo_at(text, line)) is not None:
            start = types.Position(line=line, character=0)
            add(
                f"Council: Generate: {todo[:50]}",
                KIND_GENERATE,
                GENERATE,
                {
                    "uri": uri,
                    "query": todo,
                    "symbol": symbol.name if symbol else None,
                    "range": {"start": _pos(start), "end": _pos(start)},
                },
            )

        foreign = [d for d in params.context.diagnostics if d.source != SOURCE]
        if symbol and symbol.kind == "function":
            args: dict[str, object] = {"uri": uri, "symbol": symbol.name}
            add(f"Council: Debug {symbol.name}", KIND_DEBUG, DEBUG, args)
            if foreign:
                add(
                    f"Council: Debug {symbol.name} (fix these diagnostics)",
                    KIND_DEBUG_FIX,
                    DEBUG,
                    {
                        **args,
                        "diagnostics": [
                            {
                                "line": d.range.start.line + 1,
                                "message": d.message,
                                "severity": str(d.severity or "error"),
                                "source": d.source,
                            }
                            for d in foreign
                        ],
                    },
                    diagnostics=foreign,
                )
        if symbol is not None:
            add(
                f"Council: Add tests for {symbol.name}",
                KIND_TESTS,
                ADD_TESTS,
                {"uri": uri, "symbol": symbol.name},
            )

        ours = [d for d in params.context.diagnostics if d.source == SOURCE]
        state = published(ls, uri)
        if ours and state is not None and state.fix is not None and _wanted(KIND_FIX, only):
            actions.append(
                types.CodeAction(
                    title=state.fix_title,
                    kind=KIND_FIX,
                    diagnostics=ours,
                    edit=state.fix,
                    is_preferred=True,
                )
            )
        return actions
