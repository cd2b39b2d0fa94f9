"""Council events -> `$/progress`.

Uses the client's `workDoneToken` when the request carried one, else creates a token with
`window/workDoneProgress/create` when the client supports it (else runs silently). `begin`
carries the run's title and is cancellable; each stage or pass is one `report` with a
percentage and the provider/model that answered; `end` is always sent, from a `finally`.
"""

from __future__ import annotations

import logging
import uuid

from lsprotocol import types

from council.events import Event
from server.app import CouncilServer

log = logging.getLogger(__name__)


class ProgressReporter:
    def __init__(
        self, server: CouncilServer, token: types.ProgressToken | None, title: str
    ) -> None:
        self.server = server
        self.token = token
        self.title = title
        self.percent = 0
        self.ended = False

    async def begin(self) -> None:
        if self.token is None and self.server.state.supports_progress:
            token = f"council-{uuid.uuid4().hex[:12]}"
            try:
                await self.server.work_done_progress.create_async(token)
                self.token = token
            except Exception as exc:  # the client refused: run without progress
                log.warning("window/workDoneProgress/create failed: %s", exc)
        if self.token is not None:
            self.server.work_done_progress.begin(
                self.token,
                types.WorkDoneProgressBegin(title=self.title, cancellable=True, percentage=0),
            )

    def on_event(self, event: Event) -> None:
        if self.token is None or self.ended:
            return
        message = _message(event)
        if message is None:
            return
        self.percent = max(self.percent, min(event.percent, 99))
        self.server.work_done_progress.report(
            self.token, types.WorkDoneProgressReport(message=message, percentage=self.percent)
        )

    def end(self, message: str) -> None:
        if self.token is None or self.ended:
            return
        self.ended = True
        self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))


def _message(event: Event) -> str | None:
    where = f" ({event.provider}:{event.model})" if event.provider else ""
    totals = f" · {event.tokens_so_far} tok"
    if event.cost_so_far:
        totals += f" · ${event.cost_so_far:.4f}"
    if event.kind == "pass_started":
        return f"{event.detail}{totals}"
    if event.kind == "stage_started":
        who = event.role or ""
        return f"{event.stage}: {who}{' — ' + event.detail if event.detail else ''}{totals}"
    if event.kind == "stage_finished":
        if not event.ok and event.detail:
            return f"{event.stage}: {event.role or ''} {event.detail}{totals}".replace("  ", " ")
        state = "done" if event.ok else "failed"
        return f"{event.stage}: {event.role or ''} {state}{where}{totals}"
    return None
