"""OpenAI Realtime (GA) and Azure Voice Live (beta event names) wire protocol, sans I/O.

One module serves both: Azure Voice Live follows the *preview* ("beta") OpenAI Realtime
schema (``response.audio.delta``, flat session fields such as ``input_audio_format``) with
Azure additions (voice objects, ``azure_semantic_vad``, noise suppression, echo
cancellation); OpenAI's GA API renamed the output events (``response.output_audio.delta``)
and nested the session (``session.audio.input.format``). :class:`Dialect` selects the names.

The package, one module per concern (in the order they depend on each other):

- :mod:`.config`: typed configuration (dialects, voices, tools, the session) refused at
  the edge with a :class:`~antiphon.errors.ConfigError` that says how to fix it;
- :mod:`.client`: encoders of the client events;
- :mod:`.events`: :func:`parse`, which turns a frame into a typed event
  (``Malformed``/``Unknown`` for garbage), and :func:`close_error`;
- :mod:`.state`: :class:`RealtimeState`, the state machine that decides what each server
  event means (current response, which item is playing, audio of a cancelled
or finished response, function-call accumulation) and keeps the conversation journal that
a reconnect replays. No asyncio, no I/O. Sources: ``docs/realtime.md``.
"""

from __future__ import annotations

from antiphon.protocols.realtime.client import (
    CLEAR_INPUT,
    COMMIT,
    SAY_PREFIX,
    encode_append,
    encode_function_output,
    encode_message,
    encode_response_cancel,
    encode_response_create,
    encode_truncate,
)
from antiphon.protocols.realtime.config import (
    AZURE_NATIVE_VOICES,
    GEMINI_VOICES,
    INPUT_RATES,
    NAMES,
    OPENAI_VOICES,
    OUTPUT_RATES,
    VOICE_TYPES,
    Dialect,
    SessionConfig,
    Tool,
    Voice,
    build_url,
    encode_session_update,
    tools_from_config,
    voice_from_config,
)
from antiphon.protocols.realtime.events import (
    FATAL_ERROR_CODES,
    RETRYABLE_CLOSES,
    AudioDelta,
    AudioDone,
    ConnectionEnding,
    FunctionArgsDelta,
    FunctionArgsDone,
    FunctionCallReady,
    Ignored,
    InputTranscript,
    ItemTruncated,
    Malformed,
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
    Usage,
    close_error,
    parse,
)
from antiphon.protocols.realtime.state import (
    Act,
    Decision,
    JournalEntry,
    RealtimeState,
    TrackedResponse,
)

__all__ = [
    "AZURE_NATIVE_VOICES",
    "CLEAR_INPUT",
    "COMMIT",
    "FATAL_ERROR_CODES",
    "GEMINI_VOICES",
    "INPUT_RATES",
    "NAMES",
    "OPENAI_VOICES",
    "OUTPUT_RATES",
    "RETRYABLE_CLOSES",
    "SAY_PREFIX",
    "VOICE_TYPES",
    "Act",
    "AudioDelta",
    "AudioDone",
    "ConnectionEnding",
    "Decision",
    "Dialect",
    "FunctionArgsDelta",
    "FunctionArgsDone",
    "FunctionCallReady",
    "Ignored",
    "InputTranscript",
    "ItemTruncated",
    "JournalEntry",
    "Malformed",
    "OutputItemAdded",
    "OutputItemDone",
    "RealtimeState",
    "ResponseCreated",
    "ResponseDone",
    "ServerError",
    "ServerEvent",
    "SessionConfig",
    "SessionCreated",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "Tool",
    "TrackedResponse",
    "TranscriptDelta",
    "TranscriptDone",
    "Unknown",
    "Usage",
    "Voice",
    "build_url",
    "close_error",
    "encode_append",
    "encode_function_output",
    "encode_message",
    "encode_response_cancel",
    "encode_response_create",
    "encode_session_update",
    "encode_truncate",
    "parse",
    "tools_from_config",
    "voice_from_config",
]
