"""The state machine of a realtime session: everything that decides what a server event
means lives here.

:class:`RealtimeState` feeds one parsed event at a time (``feed(frame) -> Decision``):
the current response, which item is playing, audio of a cancelled or finished response,
function-call accumulation; client-side methods return the messages to send and update
the state first; the conversation journal is what a reconnect replays.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from antiphon.protocols.realtime.client import (
    COMMIT,
    SAY_PREFIX,
    encode_append,
    encode_function_output,
    encode_message,
    encode_response_cancel,
    encode_response_create,
    encode_truncate,
)
from antiphon.protocols.realtime.config import Dialect, SessionConfig, encode_session_update
from antiphon.protocols.realtime.events import (
    AudioDelta,
    AudioDone,
    ConnectionEnding,
    FunctionArgsDelta,
    FunctionArgsDone,
    FunctionCallReady,
    Ignored,
    InputTranscript,
    ItemTruncated,
    OutputItemAdded,
    OutputItemDone,
    ResponseCreated,
    ResponseDone,
    ServerError,
    ServerEvent,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    Unknown,
    parse,
)

__all__ = ["Act", "Decision", "JournalEntry", "RealtimeState", "TrackedResponse"]


# --------------------------------------------------------------------------- state machine


class Act(enum.Enum):
    """What the driver does with an event."""

    DELIVER = "deliver"  # hand to the application (with Decision.generation)
    READY = "ready"  # session.updated: the configuration is applied
    CREATED = "created"  # session.created
    DROP = "drop"  # stale or unexpected: discard (reason in Decision.note)
    MOVE = "move"  # the server will close this connection: move to a new one (resume)
    NOTICE = "notice"  # informational; log at most


@dataclass(frozen=True, slots=True)
class Decision:
    act: Act
    event: ServerEvent
    generation: int = 0
    note: str = ""
    send: tuple[str, ...] = ()


@dataclass(slots=True)
class TrackedResponse:
    """What the state knows of one response: its id, its generation, whether it was
    cancelled or is done, and which items carried its audio. Protocols whose responses
    are not numbered by the server (Gemini Live) open one with
    :meth:`RealtimeState.begin_response` under an id of their own."""

    id: str
    generation: int
    cancelled: bool = False
    done: bool = False
    audio_items: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Call:
    response_id: str
    call_id: str
    name: str
    parts: list[str] = field(default_factory=list)
    emitted: bool = False


@dataclass(frozen=True, slots=True)
class JournalEntry:
    role: str  # user | assistant
    text: str


class RealtimeState:
    """What one realtime session knows about the conversation, across connections.

    The client-side methods return the messages to send and update the state *now*,
    before any await; :meth:`receive` decides what a server event means.

    Generations (turn ids): every ``response.created`` opens a new generation; an
    interruption moves past the interrupted one, so audio of an older generation that is
    still on the wire can be recognised and dropped.
    """

    def __init__(self, dialect: Dialect, *, output_rate: int, journal_limit: int = 64) -> None:
        self.dialect = dialect
        self.output_rate = output_rate
        self.generation = 0
        self.current: TrackedResponse | None = None
        self._responses: deque[TrackedResponse] = deque(maxlen=32)
        self._requested: deque[str | None] = deque()  # response.create sent, not created yet
        self._cancel_on_create = 0
        self._calls: dict[str, _Call] = {}
        self._audio_ms: dict[str, float] = {}  # item -> ms of audio received
        self._content_index: dict[str, int] = {}
        self._last_audio: tuple[str, int] | None = None  # (item id, generation)
        self._truncated: set[str] = set()
        self._cancel_sent = 0
        self.journal: deque[JournalEntry] = deque(maxlen=journal_limit)

    # -- queries
    @property
    def awaiting(self) -> bool:
        """The server owes a response or is producing one (a deadline should run)."""
        return bool(self._requested) or self.current is not None

    @property
    def response_pending_unheard(self) -> bool:
        """A requested response produced no audio yet (it can be re-requested)."""
        if self._requested:
            return True
        cur = self.current
        return cur is not None and not cur.audio_items

    def received_ms(self, item_id: str) -> float:
        return self._audio_ms.get(item_id, 0.0)

    # -- client side
    def user_text(self, text: str) -> list[str]:
        """A user message and a response to it."""
        self.journal.append(JournalEntry("user", text))
        return [encode_message(self.dialect, "user", text), *self.request_response()]

    def request_response(self, instructions: str | None = None) -> list[str]:
        self._requested.append(instructions)
        return [encode_response_create(instructions)]

    def say(self, text: str) -> list[str]:
        return self.request_response(SAY_PREFIX + text)

    def tool_result(self, call_id: str, output: str) -> list[str]:
        return [encode_function_output(call_id, output), *self.request_response()]

    def commit(self) -> list[str]:
        return [COMMIT, *self.request_response()]

    def audio(self, pcm: bytes) -> list[str]:
        """The messages that send a chunk of input audio."""
        return [encode_append(pcm)]

    def interrupt(
        self, target_generation: int, played_ms: int | None, played_item: str | None = None
    ) -> list[str]:
        """Cancel what plays up to ``target_generation``; truncate the item being heard.

        ``played_ms``: how much of the newest audio item the user heard (None: all of what
        arrived); if ``played_item`` names another item, none of the newest was heard.
        Returns ``response.cancel`` / ``conversation.item.truncate`` as needed.
        """
        msgs: list[str] = []
        cur = self.current
        if cur is not None and cur.generation <= target_generation:
            cur.cancelled = True
            self.current = None
            self._cancel_sent += 1
            msgs.append(encode_response_cancel(cur.id))
        elif cur is None and self._requested:
            # Asked for but not created yet: cancel it the moment it is.
            self._cancel_on_create += len(self._requested)
        last = self._last_audio
        if last is not None and last[1] <= target_generation and last[0] not in self._truncated:
            item = last[0]
            received = self._audio_ms.get(item, 0.0)
            if played_item is not None and played_item != item:
                played_ms = 0
            end = received if played_ms is None else min(float(played_ms), received)
            self._truncated.add(item)
            msgs.append(encode_truncate(item, self._content_index.get(item, 0), int(end)))
        self.generation = max(self.generation, target_generation + 1)
        return msgs

    def session_update(self, cfg: SessionConfig) -> str:
        """The message that configures a connection (a dialect of the schema whose
        session has another shape, xAI's, overrides it)."""
        return encode_session_update(self.dialect, cfg)

    def reconnect(self, cfg: SessionConfig) -> list[str]:
        """Start over on a new connection: the session, the conversation, an unheard request.

        Returns what to send after ``session.created``: the configuration, the journal
        (text items), and ``response.create`` again if a requested response had produced
        no audio. A response that was partly heard is lost (it moved past: new generation).
        """
        again = self.response_pending_unheard and not self._cancel_on_create
        instructions: str | None = None
        if self._requested:
            instructions = self._requested[0]
        cur = self.current
        if cur is not None:
            cur.cancelled = True
        self.current = None
        self._requested.clear()
        self._cancel_on_create = 0
        self._calls.clear()
        self._last_audio = None
        self.generation += 1
        msgs = [self.session_update(cfg)]
        msgs += [encode_message(self.dialect, e.role, e.text) for e in self.journal]
        if again:
            msgs += self.request_response(instructions)
        return msgs

    # -- moving to a new connection with the server's consent (session resumption)
    @property
    def can_resume(self) -> bool:
        """The server gave a handle that restores the conversation on a new connection
        (Gemini Live's session resumption; the OpenAI schema has none)."""
        return False

    @property
    def quiet(self) -> bool:
        """A good moment to move: nothing owed, nothing said since the last handle."""
        return self.can_resume and not self.awaiting

    def resume(self, cfg: SessionConfig) -> list[str] | None:
        """What starts a new connection that resumes this session (None: the protocol
        cannot resume; the caller reconnects with :meth:`reconnect` instead)."""
        return None

    # -- server side
    def feed(self, frame: str | bytes) -> Decision:
        return self.receive(parse(frame, self.dialect))

    def feed_all(self, frame: str | bytes) -> list[Decision]:
        """What one frame means, as a list: a protocol whose messages carry several events
        (Gemini Live's ``serverContent``) overrides this; here one frame is one event."""
        return [self.feed(frame)]

    def begin_response(self, rid: str) -> TrackedResponse:
        """A response opens: a new generation, the oldest request answered. If the
        caller interrupted it before it existed, it is returned ``cancelled`` (and is not
        the current response); else it becomes :attr:`current`."""
        self.generation += 1
        r = TrackedResponse(rid, self.generation)
        if self._requested:
            self._requested.popleft()
        self._responses.append(r)
        if self._cancel_on_create:
            self._cancel_on_create -= 1
            r.cancelled = True
        else:
            self.current = r
        return r

    def _response(self, rid: str) -> TrackedResponse | None:
        cur = self.current
        if cur is not None and cur.id == rid:
            return cur
        for r in self._responses:
            if r.id == rid:
                return r
        return None

    def _live(self, rid: str, ev: ServerEvent) -> tuple[TrackedResponse | None, Decision | None]:
        r = self._response(rid)
        if r is None:
            return None, Decision(Act.DROP, ev, note=f"event of unknown response {rid!r}")
        if r.cancelled:
            return None, Decision(Act.DROP, ev, r.generation, "event of a cancelled response")
        if r.done:
            return None, Decision(Act.DROP, ev, r.generation, "event after response.done")
        return r, None

    def receive(self, ev: ServerEvent) -> Decision:
        g = self.generation
        if isinstance(ev, AudioDelta):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            r.audio_items.add(ev.item_id)
            ms = len(ev.audio) / 2 / self.output_rate * 1000.0
            self._audio_ms[ev.item_id] = self._audio_ms.get(ev.item_id, 0.0) + ms
            self._content_index[ev.item_id] = ev.content_index
            self._last_audio = (ev.item_id, r.generation)
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, TranscriptDelta | AudioDone):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, TranscriptDone):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            if ev.transcript and ev.item_id not in self._truncated:
                self.journal.append(JournalEntry("assistant", ev.transcript))
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, ResponseCreated):
            r = self.begin_response(ev.response_id)
            if r.cancelled:
                self._cancel_sent += 1
                return Decision(
                    Act.DROP,
                    ev,
                    r.generation,
                    "response interrupted before it was created",
                    (encode_response_cancel(r.id),),
                )
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, ResponseDone):
            r = self._response(ev.response_id)
            if r is None:
                return Decision(Act.DROP, ev, g, f"response.done of unknown {ev.response_id!r}")
            if r.done:
                return Decision(Act.DROP, ev, r.generation, "second response.done")
            r.done = True
            if self.current is r:
                self.current = None
            for cid in [c for c, call in self._calls.items() if call.response_id == r.id]:
                del self._calls[cid]
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, OutputItemAdded):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            if ev.item_type == "function_call":
                self._calls[ev.item_id] = _Call(ev.response_id, ev.call_id, ev.name)
            return Decision(Act.NOTICE, ev, r.generation)
        if isinstance(ev, FunctionArgsDelta):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            call = self._calls.setdefault(ev.item_id, _Call(ev.response_id, ev.call_id, ""))
            call.parts.append(ev.delta)
            return Decision(Act.NOTICE, ev, r.generation)
        if isinstance(ev, FunctionArgsDone | OutputItemDone):
            return self._call_done(ev)
        if isinstance(ev, SpeechStarted | SpeechStopped | InputTranscript):
            if isinstance(ev, InputTranscript) and ev.transcript:
                self.journal.append(JournalEntry("user", ev.transcript))
            return Decision(Act.DELIVER, ev, g)
        if isinstance(ev, SessionCreated):
            return Decision(Act.CREATED, ev, g)
        if isinstance(ev, SessionUpdated):
            return Decision(Act.READY, ev, g)
        if isinstance(ev, ServerError):
            if ev.code == "response_cancel_not_active" and self._cancel_sent:
                return Decision(Act.DROP, ev, g, "cancel crossed the end of the response")
            if ev.code == "conversation_already_has_active_response" and self._requested:
                self._requested.popleft()  # that response.create was refused
            return Decision(Act.DELIVER, ev, g)
        if isinstance(ev, ItemTruncated | Ignored | FunctionCallReady | ConnectionEnding):
            return Decision(Act.NOTICE, ev, g)
        if isinstance(ev, Unknown):
            return Decision(Act.DROP, ev, g, f"unknown event type {ev.type!r}")
        return Decision(Act.DROP, ev, g, ev.reason)

    def _call_done(self, ev: FunctionArgsDone | OutputItemDone) -> Decision:
        if isinstance(ev, OutputItemDone) and ev.item_type != "function_call":
            return Decision(Act.NOTICE, ev, self.generation)
        r, drop = self._live(ev.response_id, ev)
        if r is None:
            assert drop is not None
            return drop
        call = self._calls.get(ev.item_id)
        if call is None:
            call = self._calls[ev.item_id] = _Call(ev.response_id, ev.call_id, ev.name)
        if call.emitted:
            return Decision(Act.NOTICE, ev, r.generation)
        call.emitted = True
        args = ev.arguments or "".join(call.parts)
        ready = FunctionCallReady(
            ev.response_id, ev.item_id, ev.call_id or call.call_id, ev.name or call.name, args
        )
        return Decision(Act.DELIVER, ready, r.generation)
