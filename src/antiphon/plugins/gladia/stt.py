"""Gladia live STT (v2: ``POST /v2/live``, then the session's WebSocket).

Each connection first asks ``POST {base_url}/v2/live`` for a session (the configuration
goes in the body, the key in ``x-gladia-key``; an answer other than 2xx is a typed HTTP
error: 401/403 an ``AuthError``, 429 "too many concurrent sessions" retryable), then
connects to the WebSocket URL it answers, which carries the session's token. Both steps
run within the ``connect`` deadline each, on one pooled HTTP client the plugin owns and
closes. The rest is :class:`~antiphon.services.ws_stt.WebSocketSTT`'s: one connection
per stream, deadlines, retries with backoff, and the replay of unanswered audio on a new
session after a drop (:class:`~antiphon.protocols.gladia_stt.LiveSession` decides what
each message means).

Utterances end on the server's endpointing (``endpointing`` seconds of silence). The
protocol has no message to end one now, so ``flush()`` sends that much silence: the
final it brings answers the flush. ``end_input()`` sends ``stop_recording``; the stream
completes at ``end_recording``. The protocol has no keep-alive message.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from antiphon.errors import ProviderError
from antiphon.net.http import HttpOptions, make_client, open_response
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import gladia_stt as gl
from antiphon.protocols.retry import Backoff
from antiphon.protocols.stt_session import Action
from antiphon.services.stt import STTDeadlines
from antiphon.services.ws_stt import Message, WebSocketSTT

__all__ = ["KEY_ENV", "GladiaSTT"]

PROVIDER = gl.PROVIDER
KEY_ENV = "GLADIA_API_KEY"
_AUTH_HINT = auth_hint(KEY_ENV)


class GladiaSTT(WebSocketSTT[gl.LiveSession]):
    """Gladia live speech to text (see the module docstring).

    Args:
        api_key: Defaults to ``$GLADIA_API_KEY``.
        model: ``solaria-1`` (default).
        sample_rate: The audio on the wire: 8000, 16000 (default), 32000, 44100 or 48000.
        encoding: ``wav/pcm`` (16-bit) or ``wav/ulaw``.
        languages: ISO 639-1 codes (``("en",)``; empty: detected).
        keyterms: Words and phrases to boost (``custom_vocabulary``).
        endpointing: Seconds of silence that end an utterance (0.01 to 10).
        maximum_duration_without_endpointing: The longest utterance (5 to 60 s).
        partials: Interim transcripts (default on).
        base_url: ``https://api.gladia.io`` (or a local fake ``http://127.0.0.1:PORT``).
        keepalive_interval: How often a quiet stream's task wakes (no keep-alive message).
        max_reconnects, journal_seconds, backoff, reconnect_budget: Retries of a refused
            or dropped connection, replaying unanswered audio on a new session
            (:class:`~antiphon.services.ws_stt.WebSocketSTT`).

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider = PROVIDER
    error_hint = "see Gladia's error message above"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = gl.DEFAULT_MODEL,
        sample_rate: int = 16000,
        encoding: str = "wav/pcm",
        languages: Sequence[str] = ("en",),
        keyterms: Sequence[str] = (),
        endpointing: float = 0.3,
        maximum_duration_without_endpointing: float = 30.0,
        partials: bool = True,
        base_url: str = gl.DEFAULT_BASE_URL,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        key = require_api_key(api_key, KEY_ENV, "Gladia STT")
        self.options = gl.LiveOptions(
            sample_rate=sample_rate,
            encoding=encoding,
            model=model,
            endpointing=endpointing,
            maximum_duration_without_endpointing=maximum_duration_without_endpointing,
            languages=tuple(languages),
            keyterms=tuple(keyterms),
            partials=partials,
        )
        super().__init__(
            url=gl.init_url(base_url),
            headers={},  # the session URL carries its token
            auth_hint=_AUTH_HINT,
            deadlines=deadlines,
            keepalive_interval=keepalive_interval,
            max_reconnects=max_reconnects,
            journal_seconds=journal_seconds,
            backoff=backoff,
            reconnect_budget=reconnect_budget,
        )
        self._init_headers = gl.init_headers(key)
        self._http_options = HttpOptions(
            connect_timeout=self.deadlines.connect,
            read_timeout=self.deadlines.connect,
            write_timeout=self.deadlines.process,
        )
        self._http: httpx.AsyncClient | None = None

    @property
    def sample_rate(self) -> int:
        """The rate of the audio on the wire."""
        return self.options.sample_rate

    async def open_url(self) -> str:
        """A new session's WebSocket URL (``POST /v2/live``)."""
        if self._http is None:
            self._http = make_client(self._http_options)
        request = self._http.build_request(
            "POST", self.url, headers=self._init_headers, json=self.options.init_request()
        )
        response = await open_response(
            self._http,
            request,
            provider=PROVIDER,
            timeout=self.deadlines.connect,
            stage="connect",
            auth_hint=_AUTH_HINT,
            hints={429: "too many concurrent sessions for this account (a free one has one)"},
            options=self._http_options,
        )
        try:
            body = await response.aread()
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"the session answer was cut short: {exc!r}",
                provider=PROVIDER,
                stage="connect",
                retryable=True,
            ) from None
        finally:
            await response.aclose()
        return gl.parse_init_response(body).url

    # -- the protocol
    def new_session(self) -> gl.LiveSession:
        return gl.LiveSession(self.options, journal_seconds=self.journal_seconds)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return gl.close_error(code, reason, stage=stage)

    def flush_input(self, session: gl.LiveSession) -> tuple[list[Message], list[Action]]:
        return session.flush(), []

    def end_input(self, session: gl.LiveSession) -> list[Message]:
        return session.stop_recording()

    async def _aclose_resources(self) -> None:
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()
