"""How the pack reaches a remote language-model server, and the errors it reports about one.

Torch-free and vLLM-free: the CLI's and the Engine node's choices import it instantly.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Optional

DEFAULT_CONNECT_TIMEOUT_S = 10.0  # a server that does not accept the connection by then is absent
DEFAULT_READ_TIMEOUT_S = 300.0  # the longest silence allowed inside a stream (a queued request waits here)
DEFAULT_RETRIES = 3  # attempts after the first, for refused connections, overload (429/503) and broken streams
DEFAULT_RETRY_BACKOFF_S = 1.0  # first wait between attempts; doubles each time
DEFAULT_MAX_CONCURRENCY = 64  # requests in flight at once from one engine (the server batches them)
RETRY_AFTER_CAP_S = 30.0  # a server's Retry-After is honoured up to this
SCHEMES = ("http", "https")

__all__ = ["RemoteLMConfig", "RemoteLMError", "RemoteLMOverloaded", "RemoteLMRequestError", "RemoteLMTimeout",
           "RemoteLMUnavailable", "RemoteLMWrongServer", "remote_lm_config"]


class RemoteLMError(RuntimeError):
    """The remote language model could not serve a request; the message says what to do."""


class RemoteLMUnavailable(RemoteLMError):
    """No server answers at the URL (refused, unreachable, timed out connecting)."""


class RemoteLMOverloaded(RemoteLMError):
    """The server kept answering 429 / 503 after every retry."""


class RemoteLMTimeout(RemoteLMError):
    """The server stopped streaming for longer than the read timeout."""


class RemoteLMWrongServer(RemoteLMError):
    """The server answers but cannot serve Step1 the pack's way (other model, tied head, no plugin ...)."""


class RemoteLMRequestError(RemoteLMError):
    """The server refused a request as invalid (HTTP 4xx other than 404 / 429)."""


@dataclass(frozen=True)
class RemoteLMConfig:
    """A vLLM (OpenAI-compatible) server that generates the audio tokens; front end and decoder stay local.

    ``url``: the server's root, e.g. ``http://gpu-box:8000`` (a trailing ``/v1`` is accepted). ``model``:
    the served model name; None takes the server's only model. ``require_step1``: refuse a server whose
    model is not Step1 (off only for the tests' stand-in model).
    """

    url: str
    model: Optional[str] = None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    require_step1: bool = True

    def __post_init__(self) -> None:
        url = (self.url or "").strip()
        if url and "://" not in url:
            url = "http://" + url
        url = url.rstrip("/")
        if url.endswith("/v1"):
            url = url[:-len("/v1")]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ValueError(f"LM server {self.url!r} is not a URL like http://host:8000.")
        object.__setattr__(self, "url", url)
        for name in ("connect_timeout_s", "read_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if self.retries < 0 or self.retry_backoff_s < 0:
            raise ValueError("retries and retry_backoff_s must be >= 0.")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}.")

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urllib.parse.urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")

    @property
    def base_path(self) -> str:
        """The URL's path prefix (a server behind a proxy path), without a trailing slash."""
        return urllib.parse.urlsplit(self.url).path.rstrip("/")


def remote_lm_config(server: "str | RemoteLMConfig | None") -> Optional[RemoteLMConfig]:
    """The remote config for an Engine / CLI ``lm_server`` value: None (or an empty string) = local."""
    if server is None or isinstance(server, RemoteLMConfig):
        return server
    server = str(server).strip()
    return RemoteLMConfig(server) if server else None
