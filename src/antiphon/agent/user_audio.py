"""The agent session's input side: the user's audio, through the VAD to the speech edges.

How it is built: :class:`UserAudio` (a base of :class:`~antiphon.agent.session.AgentSession`)
takes each frame of :meth:`UserAudio.push_audio` on the caller's task: it runs the VAD,
keeps the turn model's audio, feeds the STT stream (behind the speech gate for an
in-process recogniser) and posts the VAD's speech edges to the controller's mailbox as
:class:`~antiphon.agent.turn_events.SpeechStarted` / ``SpeechEnded`` — with when the
speech ended in the STT stream's own audio, so a final can be seen to cover it — and
``SpeechLasted`` when the speech passes the interruption thresholds' durations (the
silence before a speech end does not count). A VAD that decides on an inference worker
reports through ``VAD.on_decided`` the same way, so a barge-in does not wait for the
next frame. It awaits nothing and decides nothing: the turn machine does.
"""

from __future__ import annotations

import asyncio

from antiphon.agent.shell import InputEnded
from antiphon.agent.turn_events import SpeechEnded, SpeechLasted, SpeechStarted
from antiphon.aio.clock import Clock
from antiphon.audio.frame import AudioFrame
from antiphon.errors import AntiphonError, ConfigError, StreamClosedError
from antiphon.services.stt import RecognizeStream
from antiphon.services.turn import TurnAudio
from antiphon.services.vad import VAD, SpeechGate, SpeechStart, VADEvent

__all__ = ["UserAudio"]


class UserAudio:
    """The user's audio into the session (see the module docstring)."""

    vad: VAD
    clock: Clock
    _started: bool
    _closing: bool
    _input_ended: bool
    _error: AntiphonError | None
    _idle: asyncio.Event
    _stt_stream: RecognizeStream | None
    _stt_gate: SpeechGate
    _turn_audio: TurnAudio | None
    _speech_start: float | None
    _voiced_until: float
    _overlap_marks: list[float]
    _overlap_step: int

    def _post(self, item: object) -> bool:
        raise NotImplementedError  # the session's

    def push_audio(self, frame: AudioFrame) -> None:
        """The user's audio, as it arrives (any rate and channel count)."""
        if not isinstance(frame, AudioFrame):
            raise ConfigError(f"push_audio() takes an AudioFrame, got {type(frame).__name__}")
        if not self._started or self._closing or self._input_ended:
            if not self._started or self._closing:
                detail = f" (it failed: {self._error})" if self._error else ""
                raise StreamClosedError(f"push_audio() needs a started, open session{detail}")
            raise StreamClosedError("push_audio() after end_input()")
        vad = self.vad
        events = vad.process(frame)
        turn_audio = self._turn_audio
        if turn_audio is not None:
            turn_audio.push(frame)
        stream = self._stt_stream
        if stream is not None and not stream.done:
            # audio is lost while a failed STT stream is replaced; a stream that fails
            # on this push (its provider fell behind) is reported by its reader
            gate = self._stt_gate
            try:
                if not gate.enabled:  # every frame, as the gate would pass it
                    stream.push_audio(frame)
                else:
                    for part in gate.feed(frame, vad.speaking or bool(events)):
                        stream.push_audio(part)
            except StreamClosedError:
                pass
        if events or self._speech_start is not None:  # else nothing to decide: silence
            self._after_vad(events)

    def end_input(self) -> None:
        """The user's audio is over (a file ended): close an open speech segment."""
        if not self._started or self._closing or self._input_ended:
            return
        self._after_vad(self.vad.flush())
        self._input_ended = True
        self._post(InputEnded())

    def _vad_decided(self, events: list[VADEvent]) -> None:
        if not self._closing and not self._input_ended:
            self._after_vad(events)

    def _after_vad(self, events: list[VADEvent]) -> None:
        position = self.vad.position
        now = self.clock.now() if events else 0.0
        stream = self._stt_stream
        # a stream fed every frame (no speech gate) hears the VAD's audio, so a VAD time
        # maps onto the stream's time; its transcripts' times then say what they cover
        aligned = stream if stream is not None and not self._stt_gate.enabled else None
        for ev in events:
            self._idle.clear()
            if isinstance(ev, SpeechStart):
                self._post(SpeechStarted())
            else:
                # when the speech ended, on the clock and in the aligned stream's audio
                lag = max(0.0, position - ev.time)
                padding = min(self.vad.options.padding, ev.time)
                stt_end = aligned.audio_seconds - lag - padding if aligned is not None else None
                self._post(SpeechEnded(now - max(0.0, lag + padding), stt_end, aligned))
            if isinstance(ev, SpeechStart):
                self._speech_start = ev.time + min(self.vad.options.padding, ev.time)
                self._voiced_until = position
                self._overlap_step = 0
            else:
                self._speech_start = None
        marks = self._overlap_marks
        if self._speech_start is not None and self._overlap_step < len(marks):
            # how long the user has been talking: the silence before a SpeechEnd is not
            if self.vad.probability >= self.vad.options.activation_threshold:
                self._voiced_until = position
            duration = self._voiced_until - self._speech_start
            if duration >= marks[self._overlap_step]:
                while self._overlap_step < len(marks) and duration >= marks[self._overlap_step]:
                    self._overlap_step += 1
                self._post(SpeechLasted(duration))
