"""What a decision of the protocol state means to the application: :class:`Delivery`.

How it is built: the session's connection handler hands every
:class:`~antiphon.protocols.realtime.Decision` marked ``DELIVER`` to
:meth:`Delivery.events`, which returns the typed :mod:`~antiphon.services.realtime.events`
to emit (and, for a fatal server error, the error that fails the session). It keeps what
spans several decisions: the odd byte of an audio delta that split a sample (carried to
the next delta of the item, so no sample is lost or shifted) and the timestamps of the
latency metrics (voice to voice, response duration). No I/O, no asyncio: the caller passes
the loop time.
"""

from __future__ import annotations

from antiphon import metrics
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ProviderError
from antiphon.protocols import realtime as rt
from antiphon.services.realtime.events import (
    AgentAudio,
    AgentTranscriptDelta,
    AgentTranscriptDone,
    FunctionCall,
    RealtimeError,
    RealtimeEvent,
    ResponseDone,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
)

__all__ = ["Delivery"]


class Delivery:
    """Maps delivered protocol events to session events, with their metrics.

    Args:
        provider: the metrics label and the provider of errors.
        output_rate: the sample rate of the agent's audio.
    """

    def __init__(self, provider: str, output_rate: int) -> None:
        self.provider = provider
        self.output_rate = output_rate
        self._carry: dict[str, bytes] = {}
        self._speech_stopped_at: float | None = None
        self._response_started: dict[str, float] = {}
        self._first_audio_seen: set[str] = set()

    def interrupted(self) -> None:
        """The agent was interrupted: a half sample of its audio is not carried over."""
        self._carry.clear()

    def events(
        self, ev: rt.ServerEvent, gen: int, loop_time: float
    ) -> tuple[list[RealtimeEvent], ProviderError | None]:
        """The session events of one delivered ``ev`` of generation ``gen``, and the error
        that must fail the session (a fatal server error), if any."""
        if isinstance(ev, rt.AudioDelta):
            return self._audio(ev, gen, loop_time), None
        if isinstance(ev, rt.TranscriptDelta):
            return [AgentTranscriptDelta(ev.delta, ev.item_id, ev.response_id, gen)], None
        if isinstance(ev, rt.TranscriptDone):
            return [AgentTranscriptDone(ev.transcript, ev.item_id, ev.response_id, gen)], None
        if isinstance(ev, rt.ResponseCreated):
            self._response_started[ev.response_id] = loop_time
            return [], None
        if isinstance(ev, rt.ResponseDone):
            return [self._response_done(ev, gen, loop_time)], None
        if isinstance(ev, rt.FunctionCallReady):
            call = FunctionCall(ev.call_id, ev.name, ev.arguments, ev.item_id, ev.response_id, gen)
            return [call], None
        if isinstance(ev, rt.SpeechStarted):
            return [UserSpeechStarted(ev.item_id, ev.audio_start_ms, gen)], None
        if isinstance(ev, rt.SpeechStopped):
            self._speech_stopped_at = loop_time
            return [UserSpeechStopped(ev.item_id, ev.audio_end_ms, gen)], None
        if isinstance(ev, rt.InputTranscript):
            return [UserTranscript(ev.transcript, ev.item_id, gen)], None
        if isinstance(ev, rt.ServerError):
            fatal = ev.code in rt.FATAL_ERROR_CODES
            err = ProviderError(
                f"the server reported {ev.type}: {ev.message}",
                provider=self.provider,
                stage="receive",
                code=ev.code or None,
                hint=f"parameter {ev.param!r}" if ev.param else None,
            )
            return [RealtimeError(err, fatal, gen)], err if fatal else None
        return [], None

    def _audio(self, ev: rt.AudioDelta, gen: int, loop_time: float) -> list[RealtimeEvent]:
        data = self._carry.pop(ev.item_id, b"") + ev.audio
        if len(data) % 2:
            data, self._carry[ev.item_id] = data[:-1], data[-1:]
        if not data:
            return []
        if ev.response_id not in self._first_audio_seen:
            self._first_audio_seen.add(ev.response_id)
            if self._speech_stopped_at is not None:
                metrics.REALTIME_VOICE_TO_VOICE.labels(self.provider).observe(
                    loop_time - self._speech_stopped_at
                )
                self._speech_stopped_at = None
        # Bytes of whole int16 samples by construction (the join and carry above): no
        # checks per delta.
        frame = AudioFrame.trusted(data, self.output_rate, 1, gen)
        return [AgentAudio(frame, ev.item_id, ev.response_id, gen)]

    def _response_done(self, ev: rt.ResponseDone, gen: int, loop_time: float) -> ResponseDone:
        started = self._response_started.pop(ev.response_id, None)
        if started is not None:
            metrics.REALTIME_RESPONSE_SECONDS.labels(self.provider).observe(loop_time - started)
        self._first_audio_seen.discard(ev.response_id)
        if ev.usage is not None:
            metrics.REALTIME_TOKENS.labels(self.provider, "input").inc(ev.usage.input_tokens)
            metrics.REALTIME_TOKENS.labels(self.provider, "output").inc(ev.usage.output_tokens)
        error = ""
        if ev.error is not None:
            code = f" ({ev.error.code})" if ev.error.code else ""
            error = f"{ev.error.type}{code}: {ev.error.message}"
        return ResponseDone(ev.response_id, ev.status, ev.usage, ev.reason, gen, error)
