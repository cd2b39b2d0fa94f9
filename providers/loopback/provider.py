"""The scripting API: start and stop the server, queue replies, read the request log."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType

from providers.loopback.http import _JOIN_TIMEOUT, _POLL_INTERVAL, _Server
from providers.loopback.records import Reply, RequestRecord

logger = logging.getLogger(__name__)


class LoopbackProvider:
    """An in-process OpenAI-compatible server with scripted replies and a request log.

    Use as a context manager (``with LoopbackProvider() as lp: client(base_url=lp.base_url)``)
    or call :meth:`start`/:meth:`stop`. Thread-safe: handlers run on their own threads while
    tests script replies and read records from the main thread.
    """

    def __init__(
        self,
        *,
        models: Sequence[str] = ("loopback-chat",),
        supports_suffix: bool = True,
        supports_json_schema: bool = True,
        chunk_delay: float = 0.0,
        require_api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        responder: Callable[[RequestRecord], Reply | None] | None = None,
        like: str = "openai",
        context: int | None = None,
        supports_json_object: bool = True,
        fim: str = "honoured",
        raw_fim: str | None = None,
    ) -> None:
        if isinstance(models, str):
            models = (models,)
        self.models: tuple[str, ...] = tuple(models)
        self.supports_suffix = supports_suffix
        self.supports_json_schema = supports_json_schema
        self.supports_json_object = supports_json_object
        if fim not in ("honoured", "scrambled"):
            raise ValueError(f"fim must be 'honoured' or 'scrambled', not {fim!r}")
        #: "scrambled": `suffix` is accepted but the infill is junk (llama-cpp-python with a
        #: model whose sentinels are not the ones it hard-codes); "honoured" answers the FIM
        #: canary of providers.quirks right
        self.fim = fim
        #: the model family (providers.fim_formats) whose raw FIM prompt this model reads
        self.raw_fim = raw_fim
        if like not in ("openai", "llama-cpp-python"):
            raise ValueError(f"like must be 'openai' or 'llama-cpp-python', not {like!r}")
        #: whose quirks to reproduce; "llama-cpp-python" (0.3.x, as measured against the real
        #: server): a json_schema response_format is refused with HTTP 500 (a validation
        #: error naming response_format), json_object with a "schema" is enforced, and
        #: streams carry no usage
        self.like = like
        #: the context window in tokens (words here): a request whose prompt plus max_tokens
        #: exceeds it is refused with llama-cpp-python's 400 "maximum context length"
        self.context = context
        self.chunk_delay = chunk_delay
        self.require_api_key = require_api_key
        self.responder = responder
        self._host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._scripts: dict[str | None, deque[Reply]] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        """Bind and serve on a daemon thread; returns ``base_url``. Idempotent while running."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        server = _Server((self._host, self._requested_port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"loopback-provider-{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        logger.info("loopback provider listening on %s", self.base_url)
        return self.base_url

    def stop(self) -> None:
        """Stop accepting, cut live connections, and join every thread (bounded wait)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.abort_connections()
        server.server_close()
        server.join_handlers(_JOIN_TIMEOUT)
        if thread is not None:
            thread.join(_JOIN_TIMEOUT)
        self._server = self._thread = None
        logger.info("loopback provider on port %s stopped", self._port)

    def __enter__(self) -> LoopbackProvider:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LoopbackProvider has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    # -- scripting and inspection -----------------------------------------------------------

    def script(self, *replies: Reply, model: str | None = None) -> None:
        """Queue replies (FIFO). Requests for ``model`` use its queue first, then the shared one."""
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(replies)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log (records are live objects until ``finished`` is set),
        without the client's FIM canaries, which are in :attr:`canaries`."""
        with self._lock:
            return [r for r in self._records if not r.canary]

    @property
    def canaries(self) -> list[RequestRecord]:
        """The FIM canary requests the client made to learn how FIM works here."""
        with self._lock:
            return [r for r in self._records if r.canary]

    def clear(self) -> None:
        """Forget recorded requests and any scripted replies not yet used."""
        with self._lock:
            self._records.clear()
            self._scripts.clear()

    def wait_for(
        self, predicate: Callable[[RequestRecord], bool], timeout: float = 5.0
    ) -> RequestRecord:
        """Poll the log until a record matches; handlers finish asynchronously to the client."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.requests:
                if predicate(record):
                    return record
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no loopback request matched within {timeout}s ({len(self.requests)} recorded)"
                )
            time.sleep(_POLL_INTERVAL)

    # -- used by handlers -------------------------------------------------------------------

    def _add_record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _next_reply(self, model: str | None) -> Reply | None:
        with self._lock:
            for key in (model, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        return None

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)
