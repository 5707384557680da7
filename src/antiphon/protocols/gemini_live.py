"""Gemini Live (``BidiGenerateContent`` over WebSocket), sans I/O, mapped onto the events of
the OpenAI-shaped realtime layer so that :class:`~antiphon.services.realtime.RealtimeSession`
drives it unchanged.

Sources: the Live API WebSockets reference, https://ai.google.dev/api/live (session
configuration is fixed by the first ``setup`` message, "you cannot update the configuration
while the connection is open"; client messages carry exactly one of ``setup``,
``clientContent``, ``realtimeInput``, ``toolResponse``), and the field names of the
``google-genai`` SDK's ``LiveClientMessage``/``LiveServerMessage`` models, against which
every message here is validated in ``tests/test_sdk_gemini_live.py``.

How it is built, in two modules: :mod:`~antiphon.protocols.gemini_live_wire` writes the
client messages and reads the server fields and close codes (pure functions, re-exported
here, so ``gemini_live`` stays the one import); this module is the state machine.
:class:`GeminiLiveState` subclasses
:class:`~antiphon.protocols.realtime.RealtimeState` (the session's hook type) and replaces
its client side (encoders of Gemini messages) and its server side (:meth:`feed_all`: one
``serverContent`` may carry audio, a transcription and ``turnComplete`` at once, so one
frame becomes a list of decisions). Gemini has no response ids: a response opens at the
first model output after a request (a synthetic ``ResponseCreated`` with id ``turn_N``)
and ends at ``turnComplete`` (completed), ``interrupted`` (cancelled) or a ``toolCall``.
Gemini has no cancel or truncate message either: :meth:`interrupt` drops the rest of the
turn locally; the server's own activity detection interrupts generation on barge-in.
Errors arrive as WebSocket close codes (see :func:`close_error`), never as a message.

Moving to a new connection: the service ends every connection after a while and says so
first with ``goAway`` (``timeLeft``). With ``sessionResumption`` in the setup, the server
sends ``sessionResumptionUpdate`` handles; a new connection whose setup carries the newest
handle continues the same conversation (context kept by the server, the setup may carry a
new voice). ``goAway`` becomes a :class:`~antiphon.protocols.realtime.ConnectionEnding`
decision (``Act.MOVE``); :meth:`GeminiLiveState.resume` writes the new connection's
messages, and :attr:`GeminiLiveState.quiet` says when moving loses nothing (no response
owed, nothing said since the handle). Without a handle the session falls back to the
ordinary reconnect (the text of the conversation replayed).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from typing import Any

from antiphon.protocols.gemini_live_wire import (
    DEFAULT_VOICE,
    INPUT_RATE,
    OUTPUT_RATE,
    PATH,
    VOICES,
    close_error,
    duration_seconds,
    encode_activity,
    encode_audio,
    encode_audio_stream_end,
    encode_client_content,
    encode_setup,
    encode_tool_response,
    usage_from_metadata,
)
from antiphon.protocols.realtime import (
    SAY_PREFIX,
    AudioDelta,
    ConnectionEnding,
    FunctionCallReady,
    Ignored,
    InputTranscript,
    Malformed,
    ResponseCreated,
    ResponseDone,
    SessionConfig,
    SessionCreated,
    SpeechStarted,
    TranscriptDelta,
    TranscriptDone,
    Unknown,
    Usage,
)
from antiphon.protocols.realtime.config import Dialect
from antiphon.protocols.realtime.state import (
    Act,
    Decision,
    JournalEntry,
    RealtimeState,
    TrackedResponse,
)

__all__ = [
    "DEFAULT_VOICE",
    "INPUT_RATE",
    "OUTPUT_RATE",
    "PATH",
    "VOICES",
    "GeminiLiveState",
    "close_error",
    "encode_activity",
    "encode_audio",
    "encode_audio_stream_end",
    "encode_client_content",
    "encode_setup",
    "encode_tool_response",
]


class GeminiLiveState(RealtimeState):
    """What one Gemini Live session knows, across connections (see the module docstring).

    ``model``/``automatic_activity_detection``/``session_resumption``: what :meth:`setup`
    sends (the voice is the configuration's); ``voice`` overrides it (None: the
    configuration's).
    """

    def __init__(
        self,
        *,
        model: str,
        voice: str | None = None,
        input_rate: int = INPUT_RATE,
        output_rate: int = OUTPUT_RATE,
        automatic_activity_detection: bool = True,
        session_resumption: bool = True,
        journal_limit: int = 64,
    ) -> None:
        super().__init__(Dialect.GA, output_rate=output_rate, journal_limit=journal_limit)
        self.model = model
        self.voice = voice
        self.input_rate = input_rate
        self.automatic_activity_detection = automatic_activity_detection
        self._ids = itertools.count(1)
        self._names: dict[str, str] = {}  # call id -> function name (for toolResponse)
        self._user_text: list[str] = []
        self._user_item = ""
        self._said: list[str] = []  # output transcription of the current response
        self._usage: Usage | None = None
        self._skip_turn = False  # the rest of an interrupted turn is dropped
        self._dropped: TrackedResponse | None = None  # ... and ends cancelled at its turnComplete
        self._activity = False  # activityStart sent, activityEnd not yet
        self.session_resumption = session_resumption
        self.handle: str | None = None  # the newest resumable sessionResumptionUpdate
        self._since_handle: list[JournalEntry] = []  # said after that handle was issued

    # -- client side
    def setup(self, cfg: SessionConfig, handle: str | None = None) -> str:
        return encode_setup(
            cfg,
            model=self.model,
            voice=self.voice,
            automatic_activity_detection=self.automatic_activity_detection,
            session_resumption=self.session_resumption,
            handle=handle,
        )

    def _remember(self, role: str, text: str) -> None:
        entry = JournalEntry(role, text)
        self.journal.append(entry)
        if self.handle is not None:
            self._since_handle.append(entry)

    def user_text(self, text: str) -> list[str]:
        self._remember("user", text)
        self._requested.append(None)
        return [encode_client_content([("user", text)], turn_complete=True)]

    def request_response(self, instructions: str | None = None) -> list[str]:
        self._requested.append(instructions)
        return [encode_client_content([], turn_complete=True)]

    def say(self, text: str) -> list[str]:
        self._requested.append(None)
        return [encode_client_content([("user", SAY_PREFIX + text)], turn_complete=True)]

    def tool_result(self, call_id: str, output: str) -> list[str]:
        self._requested.append(None)  # the model goes on after the tool response
        name = self._names.pop(call_id, "")
        return [encode_tool_response(call_id, name, output)]

    def audio(self, pcm: bytes) -> list[str]:
        msgs = []
        if not self.automatic_activity_detection and not self._activity:
            self._activity = True
            msgs.append(encode_activity(True))
        msgs.append(encode_audio(pcm, self.input_rate))
        return msgs

    def commit(self) -> list[str]:
        """End the user's turn: ``activityEnd`` (activity detection off) or
        ``audioStreamEnd`` (on: the server decides, this only flushes)."""
        self._requested.append(None)
        if self.automatic_activity_detection:
            return [encode_audio_stream_end()]
        if not self._activity:
            return [encode_activity(True), encode_activity(False)]
        self._activity = False
        return [encode_activity(False)]

    def interrupt(
        self, target_generation: int, played_ms: int | None, played_item: str | None = None
    ) -> list[str]:
        """Drop the rest of the current turn; Gemini has no cancel or truncate message."""
        cur = self.current
        if cur is not None and cur.generation <= target_generation:
            cur.cancelled = True
            self.current = None
            self._skip_turn = True
            self._dropped = cur
        elif cur is None and self._requested:
            self._cancel_on_create += len(self._requested)
        self.generation = max(self.generation, target_generation + 1)
        return []

    @property
    def can_resume(self) -> bool:
        return self.handle is not None

    @property
    def quiet(self) -> bool:
        return self.handle is not None and not self.awaiting and not self._since_handle

    def resume(self, cfg: SessionConfig) -> list[str] | None:
        """``setup`` with the newest handle (the server restores the conversation), what
        was said since that handle as ``clientContent`` turns, and a ``turnComplete`` if a
        requested response had produced no audio; None without a handle."""
        handle = self.handle
        if handle is None:
            return None
        since = list(self._since_handle)
        msgs = self._start_over(cfg, handle)
        msgs[1:1] = [encode_client_content([(e.role, e.text)], turn_complete=False) for e in since]
        return msgs

    def reconnect(self, cfg: SessionConfig) -> list[str]:
        """``setup`` again, the conversation's text as ``clientContent`` turns (one message
        each), and a ``turnComplete`` if a requested response had produced no audio."""
        turns = [
            encode_client_content([(e.role, e.text)], turn_complete=False) for e in self.journal
        ]
        msgs = self._start_over(cfg, None)
        msgs[1:1] = turns
        return msgs

    def _start_over(self, cfg: SessionConfig, handle: str | None) -> list[str]:
        """A new connection: the turn in flight is lost (new generation); ``setup`` and
        a new request for an unheard response. The handle is the new connection's to give."""
        again = self.response_pending_unheard and not self._cancel_on_create
        if self.current is not None:
            self.current.cancelled = True
        self.current = None
        self._requested.clear()
        self._cancel_on_create = 0
        self._skip_turn = False
        self._dropped = None
        self._activity = False
        self._said.clear()
        self.handle = None
        self._since_handle.clear()
        self.generation += 1
        msgs = [self.setup(cfg, handle)]
        if again:
            msgs += self.request_response()
        return msgs

    # -- server side
    def feed(self, frame: str | bytes) -> Decision:
        """The first decision of :meth:`feed_all` (use :meth:`feed_all`)."""
        return self.feed_all(frame)[0]

    def feed_all(self, frame: str | bytes) -> list[Decision]:
        g = self.generation
        try:
            msg = json.loads(frame)
        except (ValueError, UnicodeDecodeError) as exc:
            text = frame if isinstance(frame, str) else repr(frame[:64])
            return [Decision(Act.DROP, Malformed(f"invalid JSON: {exc}", text), g, "malformed")]
        if not isinstance(msg, dict):
            return [Decision(Act.DROP, Malformed("not a JSON object", str(msg)), g, "malformed")]
        out: list[Decision] = []
        if "usageMetadata" in msg:
            self._usage = usage_from_metadata(msg["usageMetadata"]) or self._usage
        if "setupComplete" in msg:
            out.append(Decision(Act.READY, SessionCreated(f"gemini_{next(self._ids)}"), g))
        content = msg.get("serverContent")
        if isinstance(content, dict):
            out += self._content(content)
        call = msg.get("toolCall")
        if isinstance(call, dict):
            out += self._tool_call(call)
        update = msg.get("sessionResumptionUpdate")
        if isinstance(update, dict):
            handle = update.get("newHandle")
            if update.get("resumable") is True and isinstance(handle, str) and handle:
                self.handle = handle
                self._since_handle.clear()
            out.append(Decision(Act.NOTICE, Ignored("sessionResumptionUpdate"), g))
        away = msg.get("goAway")
        if "goAway" in msg:
            left = away.get("timeLeft") if isinstance(away, dict) else None
            out.append(Decision(Act.MOVE, ConnectionEnding(duration_seconds(left), "goAway"), g))
        for key in ("toolCallCancellation", "voiceActivity"):
            if key in msg:
                out.append(Decision(Act.NOTICE, Ignored(key), g))
        known = {"usageMetadata", "setupComplete", "serverContent", "toolCall"}
        known |= {"toolCallCancellation", "goAway", "sessionResumptionUpdate", "voiceActivity"}
        known |= {"voiceActivityDetectionSignal"}
        if not out:
            unknown = [k for k in msg if k not in known]
            kind = unknown[0] if unknown else "usageMetadata"
            act = Act.DROP if unknown else Act.NOTICE
            out.append(Decision(act, Unknown(kind, msg) if unknown else Ignored(kind), g))
        return out

    def _open_response(self) -> tuple[TrackedResponse | None, list[Decision]]:
        """The response that model output belongs to (opened on its first output)."""
        cur = self.current
        if cur is not None:
            return cur, []
        if self._skip_turn:
            return None, []
        if not self._requested and not self.automatic_activity_detection:
            return None, []  # nobody asked: stale output (no server turns without detection)
        r = self.begin_response(f"turn_{next(self._ids)}")
        self._said.clear()
        out = self._flush_user()
        if r.cancelled:  # interrupted before it began
            self._skip_turn = True
            self._dropped = r
            return None, out
        out.append(Decision(Act.DELIVER, ResponseCreated(r.id), r.generation))
        return r, out

    def _flush_user(self) -> list[Decision]:
        if not self._user_text:
            return []
        text = "".join(self._user_text).strip()
        item = self._user_item or f"user_{next(self._ids)}"
        self._user_text.clear()
        self._user_item = ""
        if not text:
            return []
        self._remember("user", text)
        return [Decision(Act.DELIVER, InputTranscript(item, text), self.generation)]

    def _content(self, c: dict[str, Any]) -> list[Decision]:
        out: list[Decision] = []
        heard = c.get("inputTranscription")
        if isinstance(heard, dict) and isinstance(heard.get("text"), str):
            if not self._user_item:
                self._user_item = f"user_{next(self._ids)}"
            self._user_text.append(heard["text"])
        if c.get("interrupted") is True:
            out += self._end("cancelled", "turn_detected")
            barge_in = SpeechStarted(self._user_item or "user", 0)
            out.append(Decision(Act.DELIVER, barge_in, self.generation))
            self._skip_turn = False
        turn = c.get("modelTurn")
        parts = turn.get("parts") if isinstance(turn, dict) else None
        for part in parts if isinstance(parts, list) else []:
            blob = part.get("inlineData") if isinstance(part, dict) else None
            if not isinstance(blob, dict) or not str(blob.get("mimeType", "")).startswith(
                "audio/pcm"
            ):
                continue  # text parts (thoughts) and other media are not spoken
            try:
                pcm = base64.b64decode(str(blob.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                out.append(Decision(Act.DROP, Malformed("audio not base64", ""), self.generation))
                continue
            r, opened = self._open_response()
            out += opened
            ev = AudioDelta(r.id if r else "", r.id if r else "", 0, pcm)
            if r is None:
                out.append(Decision(Act.DROP, ev, self.generation, "audio of a dropped turn"))
                continue
            r.audio_items.add(r.id)
            self._audio_ms[r.id] = (
                self._audio_ms.get(r.id, 0.0) + len(pcm) / 2 / self.output_rate * 1000
            )
            self._last_audio = (r.id, r.generation)
            out.append(Decision(Act.DELIVER, ev, r.generation))
        said = c.get("outputTranscription")
        if isinstance(said, dict) and isinstance(said.get("text"), str) and said["text"]:
            r, opened = self._open_response()
            out += opened
            if r is not None:
                self._said.append(said["text"])
                out.append(
                    Decision(Act.DELIVER, TranscriptDelta(r.id, r.id, said["text"]), r.generation)
                )
        if c.get("turnComplete") is True:
            out += self._end("completed", "")
            self._skip_turn = False
        return out

    def _end(self, status: str, reason: str) -> list[Decision]:
        out = self._flush_user()
        r = self.current
        if r is None:
            dropped, self._dropped = self._dropped, None
            self._said.clear()
            if dropped is not None and not dropped.done:
                dropped.done = True
                ev = ResponseDone(dropped.id, "cancelled", "client_cancelled", self._usage)
                self._usage = None
                out.append(Decision(Act.DELIVER, ev, dropped.generation))
            return out
        self.current = None
        r.done = True
        text = "".join(self._said)
        self._said.clear()
        if text and status == "completed":
            self._remember("assistant", text)
        if text:
            out.append(Decision(Act.DELIVER, TranscriptDone(r.id, r.id, text), r.generation))
        usage, self._usage = self._usage, None
        out.append(Decision(Act.DELIVER, ResponseDone(r.id, status, reason, usage), r.generation))
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[Decision]:
        out: list[Decision] = []
        calls = call.get("functionCalls")
        for fc in calls if isinstance(calls, list) else []:
            if not isinstance(fc, dict) or not isinstance(fc.get("name"), str):
                continue
            r, opened = self._open_response()
            out += opened
            if r is None:
                continue
            call_id = str(fc.get("id") or f"call_{next(self._ids)}")
            self._names[call_id] = fc["name"]
            args = json.dumps(fc.get("args") or {}, separators=(",", ":"))
            ready = FunctionCallReady(r.id, r.id, call_id, fc["name"], args)
            out.append(Decision(Act.DELIVER, ready, r.generation))
        if self.current is not None:
            out += self._end("completed", "")  # the model waits for the tool response
        return out
