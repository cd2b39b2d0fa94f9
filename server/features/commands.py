"""`workspace/executeCommand`: the council commands, registered here and run by
`server.council_commands`.

The commands are listed in the `initialize` answer, but their implementation (pydantic
argument models, anyio, the council schemas) is imported on the first call, or earlier by
the warm-up thread that starts at `initialized`, so that it costs nothing at start-up.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from server.app import CouncilServer

GENERATE, DEBUG, ADD_TESTS = "council.generate", "council.debug", "council.addTests"
RUN, DELIBERATE, CANCEL, PROVIDERS = (
    "council.run",
    "council.deliberate",
    "council.cancel",
    "council.providers",
)
COMMANDS = (GENERATE, DEBUG, ADD_TESTS, RUN, DELIBERATE, CANCEL, PROVIDERS)


def setup(server: CouncilServer) -> None:
    for name in COMMANDS:
        # Registered with pygls so the capability lists them; CouncilProtocol dispatches them
        # with the whole ExecuteCommandParams.
        server.command(name)(_unreachable)

        async def bound(params: types.ExecuteCommandParams, _name: str = name) -> Any:
            from server.council_commands import HANDLERS

            return await HANDLERS[_name](server, params)

        server.council_commands[name] = bound

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def progress_cancelled(ls: CouncilServer, params: types.WorkDoneProgressCancelParams) -> None:
        for run in list(ls.active_runs.values()):
            if run.token == params.token:
                run.scope.cancel()


def _unreachable(*_args: Any) -> None:
    raise RuntimeError("council commands are dispatched by CouncilProtocol")
