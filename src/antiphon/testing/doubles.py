"""In-process service doubles for testing agents, fast and exactly.

- :class:`EnergyVAD`: a real VAD on signal energy (20 ms windows), exact on tone and
  silence, so a test decides when the "user" speaks.
- :class:`ScriptedSTT`: recognises each utterance (ended by ``flush``) as the next text
  of a script, with interim results while audio comes; can fail or stay silent.
- :class:`ScriptedLLM`: answers from a script of texts and tool calls
  (:class:`ToolCallScript`), token by token; can fail mid-answer.
- :class:`ToneTTS`: speaks any text as :func:`~antiphon.testing.synth.tone_for_text`,
  with word timings over the tone; can fail on a text.

How they are built: each implements the real service contract
(:mod:`antiphon.services`), so an :class:`~antiphon.agent.AgentSession` cannot tell
them from a plugin, and paces itself on an injected :class:`~antiphon.aio.clock.Clock`
(the running loop's by default), so on a virtual clock every delay is exact and costs no
wall time. No sockets and no threads: provider plugins are tested against their fake
servers; these test the agent's own logic. The conversation driver that uses them is
:mod:`antiphon.testing.agent`, which re-exports every name here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ProviderError
from antiphon.protocols.tts_session import CharWords
from antiphon.services.llm import LLM, ChatContext, ChatStream, LLMDeadlines
from antiphon.services.stt import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    STTDeadlines,
    Transcript,
)
from antiphon.services.tools import FunctionTool
from antiphon.services.tts import TTS, SynthesisStream, TextInput, WordTiming
from antiphon.services.tts import EndInput as TTSEnd
from antiphon.services.vad import VAD, VADOptions
from antiphon.testing.synth import SECONDS_PER_CHAR, tone_for_text

__all__ = [
    "RATE",
    "EnergyVAD",
    "LLMReply",
    "ScriptedLLM",
    "ScriptedSTT",
    "ToneTTS",
    "ToolCallScript",
]

RATE = 16000


async def _pause(clock: Clock, seconds: float) -> None:
    if seconds > 0:
        await clock.sleep_until(clock.now() + seconds)
    else:
        await asyncio.sleep(0)


# ----------------------------------------------------------------------------- VAD


class EnergyVAD(VAD):
    """Speech where a 20 ms window's RMS exceeds ``threshold`` (of full scale)."""

    name = "energy"
    sample_rate: ClassVar[int] = RATE
    window: ClassVar[int] = 320

    def __init__(self, options: VADOptions | None = None, *, threshold: float = 0.02) -> None:
        super().__init__(options or VADOptions(min_speech_duration=0.06, padding=0.0))
        self.threshold = threshold

    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        return 1.0 if _voiced(window, self.threshold) else 0.0


def _voiced(samples: npt.NDArray[np.int16], threshold: float) -> bool:
    """Whether the RMS of ``samples`` reaches ``threshold`` of full scale: speech, to the
    doubles (:class:`EnergyVAD`, :class:`ScriptedSTT` with ``voiced_only``)."""
    x = samples.astype(np.float32)
    # the method, not np.dot: the same product without the function's dispatch
    return bool(x.size) and float(x.dot(x)) / (x.size * 32768.0 * 32768.0) >= threshold**2


# ----------------------------------------------------------------------------- STT


class ScriptedSTT(STT):
    """Each utterance (audio, then ``flush``) is recognised as the next script line.

    Interim transcripts (growing prefixes of the line) come every ``interim_every``
    seconds of audio. A flush's final is marked ``flushed`` (an empty final when there
    was nothing to recognise), as the WebSocket STTs mark their answer to a flush.
    ``silent_flushes``: flushes (numbered from 0) answered with no final at all, as a
    server that drops a final. ``fail_streams``: stream number →
    seconds of audio after which that stream fails. ``final_delay``: seconds (on
    ``clock``) between a flush and its final, as a slow server. ``direct_audio``: take
    audio on the stream's direct path (in the caller's ``push_audio``, as the WebSocket
    STTs send it) while the stream's task waits; False: every frame through the mailbox.
    ``voiced_only``: only frames whose RMS exceeds ``threshold`` (of full scale, as
    :class:`EnergyVAD` decides) count towards an utterance and its interims, as a
    recogniser hears no words in silence; by default every frame counts, so a line of
    silence is heard as the next script line (what most tests feed).
    """

    provider: ClassVar[str] = "scripted-stt"

    def __init__(
        self,
        script: Sequence[str] = (),
        *,
        interim_every: float = 0.2,
        silent_flushes: Sequence[int] = (),
        fail_streams: dict[int, float] | None = None,
        final_delay: float = 0.0,
        clock: Clock | None = None,
        direct_audio: bool = True,
        voiced_only: bool = False,
        threshold: float = 0.02,
    ) -> None:
        super().__init__(deadlines=STTDeadlines())
        self.final_delay = final_delay
        self.direct_audio = direct_audio
        self.voiced_only = voiced_only
        self.threshold = threshold
        self.clock: Clock = clock or MonotonicClock()
        self.script = list(script)
        self.interim_every = interim_every
        self.silent_flushes = frozenset(silent_flushes)
        self.fail_streams = dict(fail_streams or {})
        self.flushes = 0
        self.streams_opened = 0
        self.heard: list[str] = []
        self.record = True
        """Whether :attr:`heard` keeps what was heard (off in a long bench)."""

    def _new_stream(self, generation: int) -> RecognizeStream:
        number = self.streams_opened
        self.streams_opened += 1
        return _ScriptedRecognize(self, generation, self.fail_streams.get(number))


class _ScriptedRecognize(RecognizeStream):
    """Audio is only counted (interims by position), so it is taken on the direct path
    too: :meth:`_audio` is what both paths do with a frame."""

    def __init__(self, stt: ScriptedSTT, generation: int, fail_after: float | None) -> None:
        self._stt = stt
        self._fail_after = fail_after
        self._position = 0.0  # seconds of audio taken
        self._utt_start: float | None = None  # where the current utterance began
        self._since = 0.0  # audio since the last interim
        self._utterance = 0
        super().__init__(
            provider=stt.provider, generation=generation, owner=stt._tasks, close_timeout=1.0
        )

    def _take_audio_now(self, frame: AudioFrame) -> bool:
        if not self._stt.direct_audio:
            return False
        self._audio(frame)
        return True

    def _audio(self, frame: AudioFrame) -> None:
        stt = self._stt
        d = frame.duration
        position = self._position
        self._position += d
        if self._fail_after is not None and self._position >= self._fail_after:
            raise ProviderError("injected STT failure", provider=stt.provider, stage="stream")
        if stt.voiced_only and not _voiced(frame.as_array(), stt.threshold):
            return  # silence: no word, and no utterance begins
        if self._utt_start is None:
            self._utt_start = position
        self._since += d
        if stt.script and self._since >= stt.interim_every:
            self._since = 0.0
            words = stt.script[0].split()
            start = self._utt_start
            n = max(1, min(len(words), round((self._position - start) / 0.3)))
            self._emit(
                Transcript(" ".join(words[:n]), False, start, self._position, 0.0, self._utterance)
            )

    async def _run(self) -> None:
        stt = self._stt
        async for item in self._mailbox:
            if isinstance(item, AudioInput):
                self._audio(item.frame)
            elif isinstance(item, FlushInput | EndInput):
                number = stt.flushes
                stt.flushes += 1
                answers = False
                if isinstance(item, FlushInput):
                    self._took_flush()
                    answers = not self._flush_pending and number not in stt.silent_flushes
                start, position = self._utt_start, self._position
                if start is not None and stt.script and number not in stt.silent_flushes:
                    if stt.final_delay:
                        await _pause(stt.clock, stt.final_delay)
                    text = stt.script.pop(0)
                    if stt.record:
                        stt.heard.append(text)
                    self._emit(
                        Transcript(
                            text, True, start, position, 1.0, self._utterance, flushed=answers
                        )
                    )
                    self._utterance += 1
                elif answers:  # nothing to recognise: the answer is an empty final
                    self._emit(Transcript("", True, position, position, flushed=True))
                self._utt_start, self._since = None, 0.0
                if isinstance(item, EndInput):
                    return


# ----------------------------------------------------------------------------- LLM


@dataclass(frozen=True, slots=True)
class ToolCallScript:
    """A scripted tool call: ``name`` with ``arguments`` (a dict, sent as JSON)."""

    name: str
    arguments: dict[str, object] = field(default_factory=dict)


LLMReply = str | Sequence[ToolCallScript] | ProviderError | Callable[[ChatContext], str]


class ScriptedLLM(LLM):
    """Answers each chat with the next script item, one word per token.

    An item is a text, a list of :class:`ToolCallScript` (one response of tool calls),
    a ``ProviderError`` (raised before any token), or a function of the context giving
    the text. When the script runs out, it answers ``default``. ``token_delay``: seconds
    between tokens, on ``clock``. ``fail_after_tokens``: fail every answer
    after this many tokens.
    """

    provider: ClassVar[str] = "scripted-llm"

    def __init__(
        self,
        script: Sequence[LLMReply] = (),
        *,
        default: str = "Okay.",
        token_delay: float = 0.0,
        fail_after_tokens: int | None = None,
        deadlines: LLMDeadlines | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(deadlines=deadlines)
        self.clock: Clock = clock or MonotonicClock()
        self.script: list[LLMReply] = list(script)
        self.default = default
        self.token_delay = token_delay
        self.fail_after_tokens = fail_after_tokens
        self.requests: list[ChatContext] = []
        self.record = True
        """Whether :attr:`requests` keeps every request (off in a long bench)."""

    def _new_stream(
        self, context: ChatContext, tools: tuple[FunctionTool, ...], generation: int
    ) -> ChatStream:
        if self.record:
            self.requests.append(context)
        item = self.script.pop(0) if self.script else self.default
        return _ScriptedChat(self, context, tools, generation, item)


class _ScriptedChat(ChatStream):
    def __init__(
        self,
        llm: ScriptedLLM,
        context: ChatContext,
        tools: tuple[FunctionTool, ...],
        generation: int,
        item: LLMReply,
    ) -> None:
        self._llm = llm
        self._item = item
        super().__init__(
            provider=llm.provider,
            context=context,
            tools=tools,
            generation=generation,
            owner=llm._tasks,
            deadlines=llm.deadlines,
        )

    async def _run(self) -> None:
        llm, item = self._llm, self._item
        if isinstance(item, ProviderError):
            raise item
        if callable(item):
            item = item(self.context)
        if isinstance(item, str):
            for i, word in enumerate(item.split(" ")):
                if llm.fail_after_tokens is not None and i >= llm.fail_after_tokens:
                    raise ProviderError(
                        "injected LLM failure", provider=llm.provider, stage="stream"
                    )
                if llm.token_delay > 0:
                    await _pause(llm.clock, llm.token_delay)
                else:  # _pause's yield, without its coroutine (once per token)
                    await asyncio.sleep(0)
                self._text(word if i == 0 else " " + word)
            self._finish_reason("stop")
            return
        for index, call in enumerate(item):
            await _pause(llm.clock, llm.token_delay)
            self._tool_delta(index, id=f"call_{index}", name=call.name)
            self._tool_delta(index, arguments=json.dumps(call.arguments))
        self._finish_reason("tool_calls")


# ----------------------------------------------------------------------------- TTS


class ToneTTS(TTS):
    """Speaks text as its deterministic tone, in ``chunk`` second chunks.

    ``chunk_delay``: seconds between chunks on ``clock`` (0 yields only).
    ``fail_on``: texts containing this fail the stream after the first chunk.
    ``word_timings``: send word timings like a provider that has them: each character
    takes :data:`~antiphon.testing.synth.SECONDS_PER_CHAR` of the tone, and a word's
    timing comes with the chunk its first character plays in, before that chunk's audio.
    """

    provider: ClassVar[str] = "tone-tts"

    def __init__(
        self,
        *,
        sample_rate: int = RATE,
        chunk: float = 0.05,
        chunk_delay: float = 0.0,
        fail_on: str | None = None,
        clock: Clock | None = None,
        word_timings: bool = False,
    ) -> None:
        super().__init__(sample_rate=sample_rate)
        self.word_timings = word_timings
        self.clock: Clock = clock or MonotonicClock()
        self.chunk = chunk
        self.chunk_delay = chunk_delay
        self.fail_on = fail_on
        self.spoken: list[str] = []
        self.record = True
        """Whether :attr:`spoken` keeps every text (off in a long bench)."""

    def _new_stream(self, generation: int) -> SynthesisStream:
        return _ToneStream(self, generation)


class _ToneStream(SynthesisStream):
    def __init__(self, tts: ToneTTS, generation: int) -> None:
        self._tts = tts
        super().__init__(
            provider=tts.provider,
            sample_rate=tts.sample_rate,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=1.0,
            word_timings=tts.word_timings,
        )

    async def _run(self) -> None:
        text: list[str] = []
        async for item in self._mailbox:
            if isinstance(item, TextInput):
                text.append(item.text)
                continue
            spoken = "".join(text).strip()
            text.clear()
            if spoken:
                await self._say(spoken)
            if isinstance(item, TTSEnd):
                return

    async def _say(self, text: str) -> None:
        tts = self._tts
        rate = tts.sample_rate
        pcm = tone_for_text(text, rate)
        step = round(tts.chunk * rate) * 2
        offset = self.audio_seconds  # where this segment starts in the stream
        words = list(_tone_words(text)) if tts.word_timings else []
        for i, start in enumerate(range(0, len(pcm), step)):
            if i == 1 and tts.fail_on is not None and tts.fail_on in text:
                raise ProviderError("injected TTS failure", provider=tts.provider, stage="stream")
            if tts.chunk_delay > 0:
                await _pause(tts.clock, tts.chunk_delay)
            else:  # _pause's yield, without its coroutine (once per chunk)
                await asyncio.sleep(0)
            if words:
                end = (start + step) / 2 / rate
                due = tuple(w for w in words if w.start < end)
                if due:
                    del words[: len(due)]
                    self._emit_words(due, offset)
            # whole int16 samples of a tone made here: the unchecked constructor
            self._emit(AudioFrame.trusted(pcm[start : start + step], rate, 1, self.generation))
        if tts.record:
            tts.spoken.append(text)


def _tone_words(text: str) -> tuple[WordTiming, ...]:
    """The words of ``text`` timed over its tone, :data:`SECONDS_PER_CHAR` a character."""
    chars = CharWords()
    step = SECONDS_PER_CHAR
    timed = chars.feed((c, i * step, (i + 1) * step) for i, c in enumerate(text))
    return timed + chars.finish()
