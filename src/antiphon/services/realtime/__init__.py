"""The speech-to-speech realtime contract: ``RealtimeModel.session()`` → ``RealtimeSession``.

A session is one conversation with a realtime model over one WebSocket at a time::

    async with model.session() as s:          # connects; waits for the session to be ready
        s.push_audio(frame)                   # any rate/channels: converted, in order
        async for ev in s:                    # typed events, each with its generation
            if isinstance(ev, AgentAudio): play(ev.frame)

The session reaches exactly one terminal state (closed by the caller, or failed with a
typed :class:`~antiphon.errors.ProviderError`) within its deadlines, whatever the server
does. The package: :mod:`.events` (what a session yields, its states and deadlines),
:mod:`.model` (the service and its WebSocket base), :mod:`.session` (one conversation,
with its parts :mod:`.commands`, :mod:`.handshake`, :mod:`.delivery`, :mod:`.output`,
:mod:`.watchdog`, :mod:`.handover`).
Design, as in :mod:`antiphon.services.ws_tts`:

- no task reads the socket: the connection's handler, called from the protocol callback
  that parsed each server message, asks :class:`~antiphon.protocols.realtime.RealtimeState`
  what it means and puts the resulting events straight into the session's output, so an
  audio delta, a transcript, a tool call or an error crosses one task hop (into the
  consumer), never a task per delta. The session's main task takes the caller's commands
  and audio from a mailbox, in order, and sends them; what the handler must hand over (a
  lost connection to replace, a message to send) goes through that mailbox too.
  Client-side state-machine calls update the state before anything is sent, so a reply
  can never be fed before the state knows its request;
- every network wait has a deadline (:class:`RealtimeDeadlines`); the wait for a response
  uses one timer per session, re-armed lazily: an event only moves a timestamp, and the
  timer, when it fires early, sets itself again at the new due time;
- input audio is converted with a streaming :class:`~antiphon.audio.AudioConverter` (mix
  only real stereo; state across chunks) and its backlog is bounded: a server that stops
  reading fails the session instead of growing memory;
- ``interrupt()`` drops queued agent audio at once (everything of the interrupted
  generation is skipped at the iterator), cancels the response and truncates the
  assistant item at the played position;
- a dropped connection is replaced (``max_reconnects``): instructions, voice and tools are
  restored with ``session.update``, the text of the conversation is replayed, a response
  that produced no audio yet is requested again, and a :class:`Reconnected` event says so.
  When the server announces the end of a connection and gives a resumption handle
  (Gemini Live's ``goAway``), the session moves to a new connection that resumes it, at a
  quiet moment before the cut.
"""

from antiphon.protocols.realtime import Tool, Usage, Voice
from antiphon.services.realtime.events import (
    AgentAudio,
    AgentTranscriptDelta,
    AgentTranscriptDone,
    FunctionCall,
    RealtimeDeadlines,
    RealtimeError,
    RealtimeEvent,
    Reconnected,
    ResponseDone,
    SessionReady,
    SessionState,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
)
from antiphon.services.realtime.model import RealtimeModel, WebSocketRealtimeModel
from antiphon.services.realtime.session import RealtimeSession

__all__ = [
    "AgentAudio",
    "AgentTranscriptDelta",
    "AgentTranscriptDone",
    "FunctionCall",
    "RealtimeDeadlines",
    "RealtimeError",
    "RealtimeEvent",
    "RealtimeModel",
    "RealtimeSession",
    "Reconnected",
    "ResponseDone",
    "SessionReady",
    "SessionState",
    "Tool",
    "Usage",
    "UserSpeechStarted",
    "UserSpeechStopped",
    "UserTranscript",
    "Voice",
    "WebSocketRealtimeModel",
]
