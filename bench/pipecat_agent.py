"""The Pipecat side of ``bench/capacity.py``: the same agent on the same doubles, as Pipecat.

How it is built, as a Pipecat user builds a WebSocket voice bot: a FastAPI app served by
uvicorn (one process, one event loop), one route ``/ws/agent`` that accepts the socket
and runs a pipeline for it on Pipecat's own ``FastAPIWebsocketTransport``::

    transport.input() → VADProcessor → STT → user aggregator → LLM → TTS
        → transport.output() → assistant aggregator

The doubles do what antiphon's in-process doubles do (``antiphon.testing.agent``):

- :class:`EnergyVADAnalyzer`: speech where a 20 ms window's RMS exceeds 0.02 of full
  scale (antiphon's ``EnergyVAD``), stop after ``--min-silence`` of quiet (its
  ``min_silence``);
- :class:`ScriptedSTTService`: an interim transcript every 0.2 s of speech, the next
  script line as the final when the VAD hears the end of speech (antiphon's
  ``ScriptedSTT`` on its flush);
- :class:`ScriptedLLMService`: the reply, one word per token;
- :class:`ToneTTSService`: ``tone_for_text`` of the text, in 50 ms chunks.

The user's turn ends on the VAD's stop with no added wait (``SpeechTimeoutUserTurnStop
Strategy(user_speech_timeout=0)``), as antiphon's ends at ``min_silence``.

The wire is the same as antiphon's ``/ws/agent``: binary 16 kHz 16-bit PCM each way, so
the same client process drives both. Pipecat ships no raw-PCM serializer, so
:class:`RawPCMSerializer` is the few lines a user writes for it. Two transport settings
differ from the defaults, both so the wire matches: 20 ms output chunks
(``audio_out_10ms_chunks=2``, the default is 40 ms) and no silence sent while the bot is
quiet (``audio_out_auto_silence=False``; antiphon sends nothing then either).

Pipecat is a bench-only dependency (``pip install 'antiphon[bench]'``), never imported by
antiphon itself.

    .venv/bin/python bench/pipecat_agent.py --port 8765 [--min-silence 0.3] [--reply TEXT]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import NOT_GIVEN, LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

from antiphon.testing.synth import tone_for_text

RATE = 16000


def _unset(cls: type[Any]) -> Any:
    """Settings with every field left unset made None: the doubles have no model or voice."""
    unset = cls()
    return cls(
        **{f.name: None for f in dataclasses.fields(cls) if getattr(unset, f.name) is NOT_GIVEN}
    )


class RawPCMSerializer(FrameSerializer):
    """Binary messages are 16-bit mono PCM at :data:`RATE`, both ways; nothing else is sent."""

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            return bytes(frame.audio)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes):
            return InputAudioRawFrame(audio=data, sample_rate=RATE, num_channels=1)
        return None


class EnergyVADAnalyzer(VADAnalyzer):
    """Speech where a 20 ms window's RMS exceeds ``threshold`` of full scale."""

    def __init__(self, *, threshold: float = 0.02, params: VADParams | None = None) -> None:
        super().__init__(sample_rate=RATE, params=params)
        self._threshold_energy = threshold * threshold

    def num_frames_required(self) -> int:
        return 320

    def voice_confidence(self, buffer: bytes) -> float:
        x = np.frombuffer(buffer, dtype=np.int16).astype(np.float32)
        energy = float(np.dot(x, x)) / (x.size * 32768.0 * 32768.0)
        return 1.0 if energy >= self._threshold_energy else 0.0


class ScriptedSTTService(STTService):
    """Interim every ``interim_every`` s of speech; the next line as final at speech end."""

    def __init__(self, *, interim_every: float = 0.2, **kwargs: Any) -> None:
        super().__init__(
            sample_rate=RATE, ttfs_p99_latency=0.05, settings=_unset(STTSettings), **kwargs
        )
        self._interim_every = interim_every
        self._n = 0
        self._speech = 0.0
        self._since = 0.0
        self._speaking = False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        if self._speaking:
            d = len(audio) / (2 * RATE)
            self._speech += d
            self._since += d
            if self._since >= self._interim_every:
                self._since = 0.0
                words = f"question {self._n}".split()
                n = max(1, min(len(words), round(self._speech / 0.3)))
                yield InterimTranscriptionFrame(
                    " ".join(words[:n]), self._user_id, time_now_iso8601()
                )
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking, self._speech, self._since = True, 0.0, 0.0
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._speaking:
            self._speaking = False
            text = f"question {self._n}"
            self._n += 1
            await self.push_frame(
                TranscriptionFrame(text, self._user_id, time_now_iso8601(), finalized=True)
            )


class ScriptedLLMService(LLMService):
    """Answers every context with ``reply``, one word per token."""

    def __init__(self, reply: str, **kwargs: Any) -> None:
        super().__init__(settings=_unset(LLMSettings), **kwargs)
        self._reply = reply

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            for i, word in enumerate(self._reply.split(" ")):
                await self.push_frame(LLMTextFrame(word if i == 0 else " " + word))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class ToneTTSService(TTSService):
    """Speaks text as ``tone_for_text``, in ``chunk`` second chunks."""

    def __init__(self, *, chunk: float = 0.05, **kwargs: Any) -> None:
        super().__init__(
            sample_rate=RATE,
            push_start_frame=True,
            push_stop_frames=True,
            settings=_unset(TTSSettings),
            **kwargs,
        )
        self._chunk = chunk

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        pcm = tone_for_text(text.strip(), RATE)
        step = round(self._chunk * RATE) * 2
        for start in range(0, len(pcm), step):
            yield TTSAudioRawFrame(pcm[start : start + step], RATE, 1, context_id=context_id)


def create_app(min_silence: float, reply: str) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws/agent")
    async def agent(websocket: WebSocket) -> None:
        await websocket.accept()
        transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                audio_in_sample_rate=RATE,
                audio_out_sample_rate=RATE,
                audio_out_10ms_chunks=2,
                audio_out_auto_silence=False,
                serializer=RawPCMSerializer(),
            ),
        )
        context = LLMContext()
        aggregators = LLMContextAggregatorPair(
            context,
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)]
                ),
            ),
        )
        vad = VADProcessor(
            vad_analyzer=EnergyVADAnalyzer(
                params=VADParams(start_secs=0.06, stop_secs=min_silence, min_volume=0.0)
            )
        )
        pipeline = Pipeline(
            [
                transport.input(),
                vad,
                ScriptedSTTService(),
                aggregators.user(),
                ScriptedLLMService(reply),
                ToneTTSService(),
                transport.output(),
                aggregators.assistant(),
            ]
        )
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        )

        @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
        async def on_client_disconnected(_transport: Any, _ws: Any) -> None:
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--min-silence", type=float, default=0.3)
    ap.add_argument("--reply", default="Sure, here is a short answer for you.")
    a = ap.parse_args()
    logger.remove()  # Pipecat logs at DEBUG by default; warnings only, as the antiphon side
    logger.add(sys.stderr, level="WARNING")
    loop = "asyncio" if os.environ.get("ANTIPHON_LOOP") == "asyncio" else "auto"
    uvicorn.run(
        create_app(a.min_silence, a.reply),
        host="127.0.0.1",
        port=a.port,
        loop=loop,
        ws_per_message_deflate=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
