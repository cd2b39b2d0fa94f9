"""What `completion.candidates > 1` costs: `council bench inline --candidates N`.

Extra candidates are sampled only on invoked requests (the user asked, or cycles), so that
is what is measured: on the unseen-package cases of `council bench inline` (a code line
reduced to its indentation, the cursor after it), one invoked request with
`candidates = 1` and one with `candidates = N`, the setting pushed with
`workspace/didChangeConfiguration` between them (a new completer, so neither answer comes
from the other's cache). Both run in the same session on the same cases, and which goes
first alternates from case to case: the first request of a case pays the prompt's prefill,
the second finds it in the specialist's KV cache, and alternating shares that evenly.

Reported for each: the latency from request to answer, the model time the server reports,
and how many distinct suggestions came back.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path


def _q(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    q = statistics.quantiles(ordered * (2 if len(ordered) == 1 else 1), n=100, method="inclusive")
    return {"p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2), "max_ms": round(max(values), 2)}


async def candidates_cost(
    client: LanguageClient, root: Any, cases: list[Any], n: int, stats_method: str
) -> dict[str, Any]:
    """Invoked requests at each case with candidates = 1 and = `n`, interleaved."""
    version = 0
    seen: dict[int, dict[str, list[float]]] = {
        k: {"latency": [], "model": [], "items": []} for k in (1, n)
    }

    def configure(k: int) -> None:
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"council": {"completion": {"candidates": k}}}
            )
        )

    async def ask(uri: str, at: types.Position, k: int) -> None:
        started = time.perf_counter()
        result = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=at,
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                ),
            )
        )
        latency = (time.perf_counter() - started) * 1000
        items = result.items if isinstance(result, types.InlineCompletionList) else result or []
        last = await client.protocol.send_request_async(stats_method, {"since": 1 << 40})
        seen[k]["latency"].append(latency)
        seen[k]["model"].append(float(last.last.modelMs) if last.last else 0.0)
        seen[k]["items"].append(float(len(items)))

    uri = from_fs_path(str(root / "candidates.py")) or ""  # one document, text replaced
    for index, case in enumerate(cases):
        at = types.Position(line=case.line, character=case.column)
        for k in (1, n) if index % 2 == 0 else (n, 1):
            configure(k)
            version += 1
            if version == 1:
                client.text_document_did_open(
                    types.DidOpenTextDocumentParams(
                        text_document=types.TextDocumentItem(
                            uri=uri, language_id="python", version=version, text=case.text
                        )
                    )
                )
            else:
                client.text_document_did_change(
                    types.DidChangeTextDocumentParams(
                        text_document=types.VersionedTextDocumentIdentifier(
                            uri=uri, version=version
                        ),
                        content_changes=[types.TextDocumentContentChangeWholeDocument(case.text)],
                    )
                )
            await ask(uri, at, k)
    configure(1)
    report: dict[str, Any] = {"n": n, "requests_each": len(cases), "trigger": "invoked"}
    for k, values in seen.items():
        report[f"candidates_{k}"] = {
            "latency": _q(values["latency"]),
            "model_time": _q(values["model"]),
            "suggestions_mean": round(statistics.fmean(values["items"]), 2)
            if values["items"]
            else None,
        }
    return report
