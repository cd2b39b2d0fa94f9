"""The JSON-RPC layer under the council server: every request gets exactly one answer.

pygls decodes a message into lsprotocol's types while it parses the JSON, and when that
fails it logs and drops the message: an editor that sent `textDocument/codeAction` with
`params: null` would wait forever. `CouncilProtocol` keeps the parsed JSON as it is and
decodes it in `handle_message`, where the request id is still at hand:

- a request whose params do not fit the method's type is answered with InvalidParams
  (-32602), naming each bad field by its JSON path (`params.range.start.line: ...`);
- a request for a method nothing handles gets MethodNotFound (-32601) before its params are
  looked at; one that is not JSON-RPC 2.0, names a notification (`textDocument/didChange`
  with an id), or comes after `shutdown` gets InvalidRequest (-32600);
- a handler that raises is answered with the error (pygls does that), and a result that
  cannot be encoded as JSON becomes an InternalError answer rather than silence
  (`_send_data`, which otherwise frames messages as pygls does);
- a notification that cannot be decoded is logged and dropped, as are a request whose id is
  neither a string nor an integer (there is nothing to address an answer to) and a body that
  is not a JSON object.

It also hands council commands the whole `ExecuteCommandParams` and stops a run when its
request is cancelled, and holds documents as `server.text.LspTextDocument`s.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Iterator
from typing import Any

import attrs
from cattrs.errors import BaseValidationError, ClassValidationError, IterableValidationNote
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCRequestMessage

from server.text import LspWorkspace

log = logging.getLogger(__name__)

_SHOWN_PROBLEMS = 5


class CouncilProtocol(LanguageServerProtocol):
    def __init__(self, server: Any, converter: Any) -> None:
        super().__init__(server, converter)
        self._writes: set[asyncio.Future[Any]] = set()

    # -- decoding: one answer per request -------------------------------------------------------

    def structure_message(self, data: dict[str, Any]) -> Any:
        """Called by pygls for every JSON object while parsing; decoding waits for
        `handle_message`, which sees the whole message and can still answer it."""
        return data

    def handle_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            log.warning("ignored a message that is not a JSON object: %.200r", message)
            return
        if "method" not in message:  # a response to one of our requests: pygls' way
            try:
                decoded = super().structure_message(message)
            except JsonRpcException:
                return  # logged by pygls; nobody waits for an answer to an answer
            super().handle_message(decoded)
            return
        method = message["method"]
        if "id" not in message:
            self._notification(method, message)
            return
        msg_id = message["id"]
        if not _addressable(msg_id):
            log.warning("ignored a %r request whose id is %.40r", method, msg_id)
            return
        refusal = self._refusal(method, message)
        if refusal is not None:
            log.warning("refused request %r (%.60r): %s", msg_id, method, refusal.message)
            self._send_response(msg_id, error=refusal)
            return
        if "params" not in message and self.get_message_type(method) is None:
            message = {**message, "params": None}  # JSON-RPC lets a request omit them
        try:
            decoded = self._converter.structure(
                message, self.get_message_type(method) or JsonRPCRequestMessage
            )
        except Exception as exc:
            text = f"Invalid params for {method}: {describe(exc, message)}"
            log.warning("request %r: %s", msg_id, text)
            self._send_response(
                msg_id,
                error=types.ResponseError(code=types.ErrorCodes.InvalidParams, message=text),
            )
            return
        super().handle_message(decoded)

    def _notification(self, method: Any, message: dict[str, Any]) -> None:
        if not isinstance(method, str):
            log.warning("ignored a notification whose method is %.40r", method)
            return
        if "params" not in message and self.get_message_type(method) is None:
            message = {**message, "params": None}
        try:
            decoded = self._converter.structure(
                message, self.get_message_type(method) or JsonRPCNotification
            )
        except Exception as exc:
            log.warning("ignored %s notification: %s", method, describe(exc, message))
            return
        super().handle_message(decoded)

    def _refusal(self, method: Any, message: dict[str, Any]) -> types.ResponseError | None:
        """Why a request is answered with an error before its params are decoded, if it is."""
        if message.get("jsonrpc") != self.VERSION or not isinstance(method, str):
            return types.ResponseError(
                code=types.ErrorCodes.InvalidRequest,
                message='Invalid request: expected "jsonrpc": "2.0" and a string "method".',
            )
        if self._shutdown and method != types.EXIT:
            return types.ResponseError(
                code=types.ErrorCodes.InvalidRequest,
                message=f"{method}: the server is shutting down.",
            )
        kind = self.get_message_type(method)
        if kind is not None and "id" not in attrs.fields_dict(kind):
            return types.ResponseError(
                code=types.ErrorCodes.InvalidRequest,
                message=f"{method} is a notification: send it without an id.",
            )
        if method not in self.fm.builtin_features and method not in self.fm.features:
            return types.ResponseError(
                code=types.ErrorCodes.MethodNotFound, message=f"Method not found: {method}"
            )
        return None

    def _send_data(self, data: Any) -> None:
        """pygls' `_send_data`, except that an answer whose result cannot be encoded as JSON
        is replaced by an InternalError answer (pygls logs it and sends nothing, so the
        client waits forever). Each message is encoded once."""
        if not data:
            return
        try:
            body = json.dumps(data, default=self._serialize_message)
        except Exception as exc:  # TypeError, ValueError, or whatever a default= raised
            msg_id = getattr(data, "id", None)
            if msg_id is None or not hasattr(data, "result"):
                log.exception("cannot encode a message: %.200r", data)
                return
            log.exception("the result for request %r cannot be encoded as JSON", msg_id)
            error = types.ResponseError(
                code=types.ErrorCodes.InternalError,
                message=f"The result could not be encoded as JSON ({type(exc).__name__}); "
                "see the server log.",
            )
            answer = types.ResponseErrorMessage(id=msg_id, error=error)
            body = json.dumps(self._converter.unstructure(answer))
        if self.writer is None:
            log.error("Unable to send data, no available transport!")
            return
        header = ""
        if self._include_headers:
            header = (
                f"Content-Length: {len(body)}\r\n"  # json.dumps writes ASCII: chars = bytes
                f"Content-Type: {self.CONTENT_TYPE}; charset={self.CHARSET}\r\n\r\n"
            )
        try:
            written = self.writer.write((header + body).encode(self.CHARSET))
            if inspect.isawaitable(written):  # an asynchronous transport (TCP, websocket)
                task = asyncio.ensure_future(written)
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)
        except BrokenPipeError:
            log.exception("Error sending data. BrokenPipeError")
            raise
        except Exception as error:
            log.exception("Error sending data")
            self._server._report_server_error(error, JsonRpcInternalError)

    # -- council behaviour ----------------------------------------------------------------------

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Any:
        result = yield from super().lsp_initialize(params)
        # LspWorkspace only swaps the document class pygls' workspace builds, so the workspace
        # pygls just made (no document is open yet) is re-classed rather than rebuilt from
        # its private fields.
        self.workspace.__class__ = LspWorkspace
        return result

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    def lsp_workspace__execute_command(self, params: types.ExecuteCommandParams) -> Any:
        """Council commands get the whole `ExecuteCommandParams`, so they can use the
        client's `workDoneToken` (pygls' default hands a command only its arguments)."""
        handler = getattr(self._server, "council_commands", {}).get(params.command)
        if handler is None:
            return (yield from super().lsp_workspace__execute_command(params))
        result = yield handler, (params,), None
        return result

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args: Any) -> Any:
        """`shutdown` while council runs are in flight: stop the runs, answer the requests.

        pygls cancels pending request futures while iterating over the live dict. A command
        request runs through a generator handler whose future is a `concurrent.futures.Future`,
        and cancelling one runs its done-callback at once, which removes the entry
        mid-iteration ("dictionary changed size during iteration"): `shutdown` itself failed.
        The same steps, over a copy (no user SHUTDOWN handler is registered), and only for
        the client's requests: cancelling one of ours still waiting for the client (a
        `client/registerCapability` sent just before) made its callback raise, and the
        server's log showed a CancelledError traceback at every restart.
        """
        for run in list(getattr(self._server, "active_runs", {}).values()):
            run.scope.cancel()
        current_id = self.msg_id
        outgoing = getattr(self, "_result_types", {})  # our own requests to the client
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current_id and msg_id not in outgoing and not future.done():
                future.cancel()
        self._shutdown = True
        return None

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        """`$/cancelRequest`: pygls answers RequestCancelled; we also stop the run itself."""
        super()._handle_cancel_notification(msg_id)
        for run in list(getattr(self._server, "active_runs", {}).values()):
            if run.msg_id is not None and run.msg_id == msg_id:
                run.scope.cancel()

    def is_pending(self, msg_id: Any) -> bool:
        """Whether a request is still waiting for its answer: a cancelled one is not."""
        return msg_id in self._request_futures


def _addressable(msg_id: Any) -> bool:
    return isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool))


# -- naming what is wrong -----------------------------------------------------------------------


def describe(exc: BaseException, message: dict[str, Any]) -> str:
    """What cattrs could not decode, by JSON path: `params.textDocument: expected
    TextDocumentIdentifier, got 5; params.range: required field missing`."""
    problems: list[str] = []
    for path, leaf, expected in _leaves(exc, (), None):
        text = _problem(path, leaf, expected, message)
        if text not in problems:
            problems.append(text)
    if not problems:
        return f"{type(exc).__name__}: {exc}"
    more = len(problems) - _SHOWN_PROBLEMS
    return "; ".join(problems[:_SHOWN_PROBLEMS]) + (f" (and {more} more)" if more > 0 else "")


def _leaves(
    exc: BaseException, path: tuple[str | int, ...], expected: Any
) -> Iterator[tuple[tuple[str | int, ...], BaseException, Any]]:
    if isinstance(exc, BaseValidationError):
        with_notes, without = exc.group_exceptions()  # type: ignore[attr-defined]
        for sub, note in with_notes:
            if isinstance(note, IterableValidationNote):
                yield from _leaves(sub, (*path, note.index), note.type)
            else:
                yield from _leaves(sub, (*path, _json_name(note.name)), note.type)
        # raised by the class itself (an attrs validator): its message names the field
        itself = None if isinstance(exc, ClassValidationError) else expected
        for sub in without:
            yield from _leaves(sub, path, itself)
    elif isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from _leaves(sub, path, expected)
    else:
        yield path, exc, expected


def _problem(
    path: tuple[str | int, ...], exc: BaseException, expected: Any, message: dict[str, Any]
) -> str:
    value: Any = message
    for depth, step in enumerate(path):
        if not isinstance(value, dict if isinstance(step, str) else list):
            kind = "an object" if isinstance(step, str) else "an array"
            return f"{_dotted(path[:depth])}: expected {kind}, got {_shown(value)}"
        if step in value if isinstance(step, str) else 0 <= step < len(value):
            value = value[step]
        elif depth == len(path) - 1:
            return f"{_dotted(path)}: required field missing"
        else:
            break
    if expected is None:
        return f"{_dotted(path)}: {exc}"
    return f"{_dotted(path)}: expected {_type_name(expected)}, got {_shown(value)}"


def _json_name(name: str) -> str:
    """lsprotocol's attribute names are its JSON names in snake case (`from_` is `from`)."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "message"


def _type_name(kind: Any) -> str:
    name = kind.__name__ if isinstance(kind, type) else str(kind)
    name = name.replace("typing.", "").replace("lsprotocol.types.", "").replace("NoneType", "null")
    return name if len(name) <= 80 else name[:77] + "..."


def _shown(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."
