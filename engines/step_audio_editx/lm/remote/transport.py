"""HTTP to an OpenAI-compatible server with the standard library only: JSON calls, SSE streams, retries.

One connection per request (a stream holds its connection until the last token). Cancel closes the
socket under a blocked read, which is also how vLLM learns to abort the request: it stops generating
for a client that went away. Retried: refused or reset connections, 429 / 503 (with Retry-After), a
stream cut before its end, a stalled stream. Not retried: other 4xx (the request is wrong) and other 5xx
(the server is broken); each becomes one of the ``RemoteLMError`` classes with a message that says what to do.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .config import (
    RETRY_AFTER_CAP_S,
    RemoteLMConfig,
    RemoteLMError,
    RemoteLMOverloaded,
    RemoteLMRequestError,
    RemoteLMTimeout,
    RemoteLMUnavailable,
    RemoteLMWrongServer,
)

logger = logging.getLogger(__name__)

RETRY_STATUSES = (429, 503)
SSE_DATA = "data:"
SSE_DONE = "[DONE]"
ERROR_BODY_CHARS = 500  # what an error message quotes of a server's answer


class Cancelled(Exception):
    """The caller cancelled while the request was in flight (its socket was closed under it)."""


class _Retryable(Exception):
    """A failure worth another attempt; ``final`` is what to raise when the attempts run out."""

    def __init__(self, final: RemoteLMError, retry_after: Optional[float] = None):
        super().__init__(str(final))
        self.final = final
        self.retry_after = retry_after


@dataclass
class Canceller:
    """Shared by the streams of one call: ``cancel()`` closes every open socket so blocked reads return."""

    event: threading.Event
    _lock: threading.Lock
    _open: set

    @classmethod
    def new(cls) -> "Canceller":
        return cls(threading.Event(), threading.Lock(), set())

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def cancel(self) -> None:
        self.event.set()
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            _shutdown(sock)

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)
        if self.cancelled:
            _shutdown(sock)

    def unregister(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)


def _shutdown(sock: socket.socket) -> None:
    """Wake a read blocked on ``sock`` (the socket itself: http.client drops its reference once streaming)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Transport:
    """The server's HTTP API as the client needs it."""

    def __init__(self, config: RemoteLMConfig):
        self.config = config

    # -- plumbing ---------------------------------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        c = self.config
        if c.https:
            conn = http.client.HTTPSConnection(c.host, c.port, timeout=c.connect_timeout_s,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(c.host, c.port, timeout=c.connect_timeout_s)
        try:
            conn.connect()
        except (ConnectionRefusedError, socket.timeout, TimeoutError, OSError) as exc:
            conn.close()
            raise _Retryable(RemoteLMUnavailable(
                f"No language-model server answers at {c.url} ({exc.__class__.__name__}: {exc}). Start it (see "
                "docs/remote_lm.md for the vllm serve command) or clear lm_server to run the model locally.")) from exc
        conn.sock.settimeout(c.read_timeout_s)
        return conn

    def _send(self, conn: http.client.HTTPConnection, method: str, path: str,
              body: Optional[dict]) -> http.client.HTTPResponse:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json, text/event-stream"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, self.config.base_path + path, body=data, headers=headers)
            response = conn.getresponse()
        except (socket.timeout, TimeoutError) as exc:
            raise _Retryable(RemoteLMTimeout(
                f"The LM server at {self.config.url} sent no answer within {self.config.read_timeout_s:g} s.")) from exc
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _Retryable(RemoteLMUnavailable(
                f"The connection to the LM server at {self.config.url} broke ({exc.__class__.__name__}: {exc}).")
            ) from exc
        if response.status >= 400:
            raise self._status_error(response, path)
        return response

    def _status_error(self, response: http.client.HTTPResponse, path: str) -> Exception:
        status = response.status
        try:
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            text = ""
        message = _error_message(text) or response.reason or ""
        where = f"{self.config.url}{path}"
        if status in RETRY_STATUSES:
            return _Retryable(RemoteLMOverloaded(
                f"The LM server at {self.config.url} is overloaded (HTTP {status}: {message}) and stayed so after "
                f"{self.config.retries} retries. Add server capacity or lower the number of workers sending to it."),
                _retry_after(response.getheader("Retry-After")))
        if status == 404:
            return RemoteLMWrongServer(f"{where} answered HTTP 404 ({message}): not a vLLM OpenAI-compatible server, "
                                       "or it serves another model name.")
        if 400 <= status < 500:
            return RemoteLMRequestError(f"The LM server refused the request (HTTP {status}): {message}")
        return RemoteLMError(f"The LM server at {self.config.url} failed (HTTP {status}): {message}. See its log.")

    def with_retries(self, attempt: Callable[[], object], canceller: Optional[Canceller] = None):
        """Run ``attempt`` until it succeeds, retrying ``_Retryable`` failures with exponential backoff."""
        c = self.config
        for n in range(c.retries + 1):
            try:
                return attempt()
            except _Retryable as exc:
                if canceller is not None and canceller.cancelled:
                    raise Cancelled() from exc
                if n == c.retries:
                    raise exc.final from exc
                delay = c.retry_backoff_s * (2 ** n)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                logger.warning("LM server: %s; retry %d of %d in %.1f s", exc, n + 1, c.retries, delay)
                if canceller is not None:
                    if canceller.event.wait(delay):
                        raise Cancelled() from exc
                else:
                    threading.Event().wait(delay)
        raise AssertionError("unreachable")

    # -- calls ------------------------------------------------------------------------------------
    def get_json(self, path: str) -> dict:
        return self.with_retries(lambda: self._json_once("GET", path, None))

    def post_json(self, path: str, body: dict) -> dict:
        return self.with_retries(lambda: self._json_once("POST", path, body))

    def _json_once(self, method: str, path: str, body: Optional[dict]) -> dict:
        conn = self._connect()
        try:
            response = self._send(conn, method, path, body)
            try:
                return json.loads(response.read().decode("utf-8"))
            except (OSError, http.client.HTTPException) as exc:
                raise _Retryable(RemoteLMUnavailable(f"The LM server at {self.config.url} cut its answer: {exc}")
                                 ) from exc
            except ValueError as exc:
                raise RemoteLMWrongServer(f"{self.config.url}{path} did not answer JSON: not a vLLM server?") from exc
        finally:
            conn.close()

    def stream(self, path: str, body: dict, canceller: Canceller) -> Iterator[dict]:
        """One attempt at an SSE stream: yields each ``data:`` JSON event until ``[DONE]``."""
        conn = self._connect()
        sock = conn.sock
        canceller.register(sock)
        try:
            response = self._send(conn, "POST", path, body)
            for event in _sse_events(response, self.config):
                yield event
        except _Retryable:
            if canceller.cancelled:
                raise Cancelled()
            raise
        finally:
            canceller.unregister(sock)
            conn.close()


def _sse_events(response: http.client.HTTPResponse, config: RemoteLMConfig) -> Iterator[dict]:
    while True:
        try:
            raw = response.readline()
        except (socket.timeout, TimeoutError) as exc:
            raise _Retryable(RemoteLMTimeout(
                f"The LM server at {config.url} streamed nothing for {config.read_timeout_s:g} s (stalled or "
                "overloaded); raise the read timeout if its queue is long.")) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _Retryable(RemoteLMUnavailable(f"The stream from {config.url} broke: {exc}")) from exc
        if not raw:
            raise _Retryable(RemoteLMUnavailable(f"The stream from {config.url} ended before its last token."))
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith(SSE_DATA):
            continue
        data = line[len(SSE_DATA):].strip()
        if data == SSE_DONE:
            return
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise RemoteLMWrongServer(f"{config.url} streamed an event that is not JSON: {data[:80]!r}") from exc
        if "error" in event:
            raise RemoteLMError(f"The LM server failed mid-stream: {_error_message(json.dumps(event))}")
        yield event


def _error_message(text: str) -> str:
    """The human part of an OpenAI-style error body ({"error": {"message": ...}}), else the text itself."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:ERROR_BODY_CHARS]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:ERROR_BODY_CHARS]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:ERROR_BODY_CHARS]
    return str(error)[:ERROR_BODY_CHARS]


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_S) if value else None
    except ValueError:
        return None
