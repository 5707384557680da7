"""Voice activity detection: audio frames in, ``SpeechStart``/``SpeechEnd`` out.

A :class:`VAD` is a synchronous state machine, with no asyncio and no thread: feed it
:class:`~antiphon.audio.AudioFrame`s of any rate and channel count with :meth:`VAD.process`
and it returns the events that the audio decided, in audio time, after hysteresis on the
model's per-window speech probability (:class:`VADOptions`). A plugin supplies the model.
:class:`OffloadedVAD` runs any VAD's model on a shared worker thread, so the event loop
never runs inference (DESIGN rule 14); :class:`SpeechGate` passes a stream's audio on only
while its VAD hears speech.

The code lives in three modules, re-exported here (import from this one):
:mod:`antiphon.services.vad_contract` (the contract, its vocabulary and the hysteresis),
:mod:`antiphon.services.vad_offload` (inference on a worker) and
:mod:`antiphon.services.vad_gate` (speech-only audio).
"""

from __future__ import annotations

from antiphon.services.vad_contract import (
    RESAMPLE_QUALITY,
    VAD,
    SpeechEnd,
    SpeechStart,
    VADEvent,
    VADOptions,
    VADState,
)
from antiphon.services.vad_gate import SpeechGate
from antiphon.services.vad_offload import OffloadedVAD

__all__ = [
    "RESAMPLE_QUALITY",
    "VAD",
    "OffloadedVAD",
    "SpeechEnd",
    "SpeechGate",
    "SpeechStart",
    "VADEvent",
    "VADOptions",
    "VADState",
]
