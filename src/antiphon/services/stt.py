"""The streaming STT contract: ``STT.stream()`` → ``RecognizeStream``.

A stream takes audio (``push_audio``), is told where an utterance ends (``flush``, e.g.
when the VAD hears silence) and that the audio is over (``end_input``), and yields
:class:`Transcript`s: interim ones while the user speaks, then one final one per
utterance, with start and end in seconds of the stream's audio. It reaches exactly one
terminal state — completed, cancelled or failed with a typed error — within its deadlines
(:class:`STTDeadlines`), whatever the engine does; only waiting for the caller's audio is
unbounded.

Plugins implement :meth:`RecognizeStream._run`, one loop that takes every input from the
stream's mailbox. A plugin may also take audio on a direct path
(:meth:`RecognizeStream._take_audio_now`): while its task waits on an empty mailbox, a
pushed frame is offered to it in the caller's ``push_audio``, sparing the task a wake-up
per frame; declined, it goes through the mailbox (order, ``behind``, the mailbox's bound
and its failure all stay as they are). Cloud plugins map it onto a connection;
in-process engines (blocking, native) use :class:`InProcessSTT`, which runs each
:class:`Recognizer` on a dedicated :class:`EngineWorker` thread that the plugin owns and
joins (DESIGN rule 3), leased to a stream per utterance from a bounded pool; the audio
queued behind a frame goes to the engine in the same thread hop.

``STT.speech_only`` tells an agent to feed the engine only speech (an in-process engine
costs CPU per second of audio, silence included); ``RecognizeStream.behind`` says input
is still unanswered (the agent then waits for the final, bounded, rather than end the
turn with no text).

The code lives in three modules, re-exported here (import from this one):
:mod:`antiphon.services.stt_contract` (the contract and its vocabulary),
:mod:`antiphon.services.stt_engines` (the in-process engine pool) and
:mod:`antiphon.services.stt_child` (a recogniser in a child process).
"""

from __future__ import annotations

from antiphon.services.stt_child import ChildProcessRecognizer
from antiphon.services.stt_contract import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    StreamState,
    STTDeadlines,
    Transcript,
)
from antiphon.services.stt_engines import (
    EngineWorker,
    Hypothesis,
    InProcessRecognizeStream,
    InProcessSTT,
    Recognizer,
)

__all__ = [
    "STT",
    "AudioInput",
    "ChildProcessRecognizer",
    "EndInput",
    "EngineWorker",
    "FlushInput",
    "Hypothesis",
    "InProcessRecognizeStream",
    "InProcessSTT",
    "RecognizeStream",
    "Recognizer",
    "STTDeadlines",
    "StreamState",
    "Transcript",
]
