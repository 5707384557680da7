"""One agent reply: LLM rounds (with tools) → sentences → one TTS stream each → the track.

How it is built: the session's controller owns every :class:`Reply` (its state is the
controller's alone) and runs each one as a task of :meth:`ReplyRunner.run`. The runner is
the reply's I/O: it asks the LLM (round after round while it calls tools), cuts the
tokens into sentences, opens one synthesis stream per sentence up to ``tts_lookahead``
ahead of the one playing, and writes the audio to the output track with the reply's
generation. It decides nothing about the conversation: it reports what happened —
``first_audio``, ``done`` or ``failed`` — as a :class:`ReplyNews` to the controller's
mailbox, which decides what it means (a failure of a speculative reply, for one, is held
unseen until the turn is committed). Nothing is spoken and no tool runs before the
reply is committed (``Reply.committed``): a speculative reply only thinks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from antiphon.agent.events import (
    AgentEvent,
    AgentSpeaking,
    ToolCalled,
    ToolsStarted,
    TurnMetrics,
)
from antiphon.agent.options import AgentOptions
from antiphon.agent.playback import Playback, WordSync
from antiphon.agent.tracing import get_tracer
from antiphon.aio.callbacks import ignore
from antiphon.aio.channel import Channel, Overflow
from antiphon.aio.clock import Clock
from antiphon.aio.tasks import TaskGroup
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.audio.track import OutputTrack
from antiphon.errors import ProviderError
from antiphon.services.llm import LLM, ChatContext, ChatMessage, TextDelta, ToolCall
from antiphon.services.segmenter import SentenceSegmenter
from antiphon.services.tools import FunctionTool, ToolThreads, run_tools
from antiphon.services.tts import TTS, SynthesisStream

__all__ = ["Reply", "ReplyNews", "ReplyRunner"]

log = logging.getLogger(__name__)
tracer = get_tracer("antiphon.agent")


@dataclass(frozen=True, slots=True)
class ReplyNews:
    reply: Reply
    kind: str  # "first_audio" | "done" | "failed"
    error: ProviderError | None = None


@dataclass(eq=False)
class Reply:
    """One agent turn in progress (owned by the controller; run by its own task)."""

    generation: int
    user_text: str
    context: ChatContext
    metrics: TurnMetrics
    committed: asyncio.Event
    allow_interruptions: bool = True
    fixed_text: str | None = None  # say(): speak this instead of asking the LLM
    add_to_history: bool = True
    notice: bool = False  # a fallback line (see _Say)
    tts: TTS | None = None  # the TTS that speaks it (None: the session's)
    playback: Playback = field(default_factory=Playback)
    base: float | None = None  # output track position where this reply's audio starts
    new_messages: list[ChatMessage] = field(default_factory=list)
    speaking: bool = False
    task: asyncio.Task[None] | None = None
    started_at: float = 0.0
    speech_end_at: float | None = None  # clock time the user's speech ended
    span: Any = None
    # the end of a speculative reply (done or failed before the turn was committed):
    # held, unseen, until the commit reuses it or the reply is abandoned
    held: ReplyNews | None = None

    def played(self, track: OutputTrack) -> float:
        if self.base is None:
            return 0.0
        return min(self.playback.written, max(0.0, track.played - self.base))


class ReplyRunner:
    """Runs replies with the session's services; reports their news to ``report``.

    ``emit``: the session's event hub (``AgentSpeaking``, ``ToolCalled``); ``report``:
    puts a :class:`ReplyNews` in the controller's mailbox.
    """

    def __init__(
        self,
        *,
        llm: LLM,
        tts: TTS,
        tools: Sequence[FunctionTool],
        options: AgentOptions,
        clock: Clock,
        output: OutputTrack,
        tool_threads: ToolThreads,
        emit: Callable[[AgentEvent], None],
        report: Callable[[ReplyNews], object],
    ) -> None:
        self.llm, self.tts, self.tools = llm, tts, tuple(tools)
        self.options, self.clock, self.output = options, clock, output
        self._tool_threads = tool_threads
        self._emit = emit
        self._report = report

    def release(self) -> None:
        """Let go of the session's callbacks (its methods: a cycle), once it is closed."""
        self._emit = ignore  # news of a reply that ends after the close is dropped
        self._report = ignore

    def _news(self, reply: Reply, kind: str, error: ProviderError | None = None) -> None:
        self._report(ReplyNews(reply, kind, error))

    async def run(self, reply: Reply) -> None:
        """Run ``reply`` to its end; report ``done`` or ``failed`` (never raises)."""
        # the LLM's sentences wait for TTS (lookahead-bounded); a reply of more than 1,024
        # sentences fails with ChannelFull rather than growing without bound
        sentences: Channel[str] = Channel(1024, Overflow.FAIL, name="reply sentences")
        failure: BaseException | None = None
        words = WordSync(
            reply.playback,
            position=lambda: reply.played(self.output),
            clock=self.clock,
            emit=self._emit,
            generation=reply.generation,
            tick=self.output.frame_duration,
        )
        try:
            async with TaskGroup() as tg:
                tg.create_task(self._think(reply, sentences))
                follow = tg.create_task(words.run())  # AgentWords as the audio plays
                speak = tg.create_task(self._speak(reply, sentences))
                speak.add_done_callback(lambda _: follow.cancel())
        except* Exception as group:
            failure = _first(group)
        if failure is None:
            words.catch_up()
            self._news(reply, "done")
            return
        if not isinstance(failure, ProviderError):
            log.error("turn %d failed", reply.generation, exc_info=failure)
            failure = ProviderError(
                f"unexpected error: {failure!r}", provider="agent", stage="reply"
            )
        self._news(reply, "failed", failure)

    async def _think(self, reply: Reply, sentences: Channel[str]) -> None:
        """LLM rounds (with tools) → sentences; or the fixed text of a ``say()``."""
        segmenter = SentenceSegmenter()
        try:
            if reply.fixed_text is not None:
                for s in [*segmenter.push(reply.fixed_text), *segmenter.finish()]:
                    sentences.send_nowait(s)
                return
            context = reply.context
            for round_ in range(self.options.max_tool_rounds + 1):
                calls, text = await self._llm_round(reply, context, segmenter, sentences)
                for s in segmenter.finish():
                    sentences.send_nowait(s)
                if not calls:
                    return
                if round_ == self.options.max_tool_rounds:
                    log.warning("turn %d: tool rounds exhausted", reply.generation)
                    return
                await reply.committed.wait()  # tools act on the world: never speculatively
                asked = ChatMessage("assistant", text, tuple(calls))
                context.add(asked)
                reply.new_messages.append(asked)
                for m in await self._call_tools(reply, calls, sentences):
                    context.add(m)
                    reply.new_messages.append(m)
        finally:
            sentences.close()

    async def _llm_round(
        self,
        reply: Reply,
        context: ChatContext,
        segmenter: SentenceSegmenter,
        sentences: Channel[str],
    ) -> tuple[list[ToolCall], str]:
        calls: list[ToolCall] = []
        parts: list[str] = []
        asked = self.clock.now()
        with tracer.start_as_current_span("antiphon.agent.llm"):
            async with self.llm.chat(
                context, tools=self.tools, generation=reply.generation
            ) as stream:
                async for ev in stream:
                    if reply.metrics.llm_ttft is None:
                        reply.metrics.llm_ttft = self.clock.now() - asked
                    if isinstance(ev, TextDelta):
                        parts.append(ev.text)
                        for s in segmenter.push(ev.text):
                            sentences.send_nowait(s)
                    elif isinstance(ev, ToolCall):
                        calls.append(ev)
                result = await stream.result()
                if result.error is not None:
                    raise result.error
        return calls, "".join(parts)

    async def _call_tools(
        self, reply: Reply, calls: list[ToolCall], sentences: Channel[str]
    ) -> list[ChatMessage]:
        reply.metrics.tool_calls.extend(c.name for c in calls)
        self._emit(ToolsStarted(tuple(c.name for c in calls), reply.generation))
        started = self.clock.now()
        work = asyncio.ensure_future(
            run_tools(
                [(c.id, c.name, c.arguments) for c in calls],
                self.tools,
                timeout=self.options.tool_timeout,
                threads=self._tool_threads,
            )
        )
        timer = asyncio.ensure_future(
            self.clock.sleep_until(self.clock.now() + self.options.filler_delay)
        )
        try:
            if self.options.filler_text:
                await asyncio.wait([work, timer], return_when=asyncio.FIRST_COMPLETED)
                if not work.done():
                    sentences.send_nowait(self.options.filler_text)
            outcomes = await work
        finally:
            for pending in (work, timer):
                if not pending.done():
                    pending.cancel()
            await asyncio.wait([work, timer])
        messages = []
        for call, o in zip(calls, outcomes, strict=True):
            self._emit(
                ToolCalled(
                    o.name,
                    call.arguments,
                    o.output,
                    None if o.error is None else str(o.error),
                    reply.generation,
                    self.clock.now() - started,
                )
            )
            messages.append(ChatMessage("tool", o.output, tool_call_id=o.call_id, name=o.name))
        return messages

    async def _speak(self, reply: Reply, sentences: Channel[str]) -> None:
        """Sentences → one synthesis stream each (``tts_lookahead`` ahead) → the track."""
        slots = asyncio.Semaphore(self.options.tts_lookahead)
        # at most tts_lookahead streams are open (a slot is taken before each is queued)
        streams: Channel[tuple[str, SynthesisStream]] = Channel(
            self.options.tts_lookahead, Overflow.FAIL, name="reply synthesis streams"
        )
        opened: list[SynthesisStream] = []
        tts = reply.tts or self.tts

        async def open_streams() -> None:
            try:
                async for sentence in sentences:
                    await reply.committed.wait()
                    await slots.acquire()
                    stream = tts.synthesize(sentence, generation=reply.generation)
                    opened.append(stream)
                    streams.send_nowait((sentence, stream))
            finally:
                streams.close()

        try:
            async with TaskGroup() as tg:
                tg.create_task(open_streams())
                async for sentence, stream in streams:
                    try:
                        await self._play(reply, sentence, stream)
                    finally:
                        slots.release()
                        await stream.aclose()
            # everything is queued: wait (bounded) until it has been heard
            if reply.playback.written:
                await self.output.wait_drained(self.output.buffered + self.options.drain_timeout)
        finally:
            for s in opened:
                s.cancel()
            for s in opened:
                await s.aclose()

    async def _play(self, reply: Reply, sentence: str, stream: SynthesisStream) -> None:
        self._emit(AgentSpeaking(sentence, reply.generation))
        reply.playback.begin(sentence, reply.playback.written, stream.words)
        sent = self.clock.now()
        output, playback, generation = self.output, reply.playback, reply.generation
        rate = output.sample_rate
        converter = AudioConverter(rate, 1) if stream.sample_rate != rate else None
        with tracer.start_as_current_span("antiphon.agent.tts"):
            async for frame in stream:
                if converter is not None:
                    frame = converter.process(frame)
                if reply.base is None or not frame.samples_per_channel:
                    await self._write(reply, frame, sent)  # the first audio, or none
                    continue
                # _write's common case written out: once per chunk of every reply
                await output.write(frame.with_generation(generation))
                playback.written += frame.duration
                playback.grow(playback.written)
            if converter is not None:
                await self._write(reply, converter.flush(), sent)
        if stream.error is not None:
            raise stream.error
        reply.playback.finish()

    async def _write(self, reply: Reply, frame: AudioFrame, sent: float) -> None:
        if not frame.samples_per_channel:
            return
        if reply.base is None:
            now = self.clock.now()
            reply.base = self.output.played + self.output.buffered
            reply.metrics.tts_ttfa = now - sent
            if reply.speech_end_at is not None:
                reply.metrics.voice_to_voice = now - reply.speech_end_at
            self._news(reply, "first_audio")
        await self.output.write(frame.with_generation(reply.generation))
        reply.playback.written += frame.duration
        reply.playback.grow(reply.playback.written)


def _first(error: BaseException) -> BaseException:
    """The first leaf error of a (nested) exception group."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
