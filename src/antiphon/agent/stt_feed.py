"""The agent session's STT stream: one reader task, and a new stream after a failure.

How it is built: :class:`SttFeed` (a base of the session's shell) opens the stream, runs
its reader as an owned task that posts each transcript to the controller's mailbox, and,
when the stream fails, decides with the session whether it can go on — an error no new
stream can mend (authentication, quota) or more failures in a row than
``max_stt_restarts`` fail the session — or opens a new stream after a backoff (never N
attempts in the same millisecond). The turn machine hears of the failure
(``SttFailed``): the turn the lost audio belonged to is marked lost, never silently
dropped. The audio itself is fed by :meth:`AgentSession.push_audio` (behind the speech
gate for an in-process recogniser).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from antiphon.agent.events import AgentError, AgentEvent
from antiphon.agent.machine import TurnMachine
from antiphon.agent.options import AgentOptions
from antiphon.agent.turn_events import Event, SttFailed
from antiphon.aio.clock import Clock
from antiphon.aio.tasks import TaskOwner
from antiphon.errors import AntiphonError, AuthError, ProviderError
from antiphon.services.stt import STT, RecognizeStream, Transcript

__all__ = ["SttFeed"]


@dataclass(frozen=True, slots=True)
class Heard:
    transcript: Transcript
    stream: RecognizeStream


@dataclass(frozen=True, slots=True)
class SttEnded:
    stream: RecognizeStream
    error: ProviderError | None


@dataclass(frozen=True, slots=True)
class ReopenStt:
    pass


class SttFeed:
    """The STT stream's reader and its replacement (see the module docstring)."""

    stt: STT
    options: AgentOptions
    clock: Clock
    _tasks: TaskOwner
    _machine: TurnMachine
    _stt_stream: RecognizeStream | None
    _stt_failures: int
    _stt_reopen: asyncio.Task[None] | None

    # the shell's and the session's own
    def _post(self, item: object) -> bool:
        raise NotImplementedError

    def _fail(self, error: AntiphonError, stage: str, reason: str | None = None) -> None:
        raise NotImplementedError

    def _emit(self, event: AgentEvent) -> None:
        raise NotImplementedError

    def _run(self, event: Event) -> None:
        raise NotImplementedError

    def _open_stt(self) -> None:
        stream = self.stt.stream(generation=self._machine.generation)
        self._stt_stream = stream
        self._tasks.spawn(self._read_stt(stream), name="stt-reader")

    async def _read_stt(self, stream: RecognizeStream) -> None:
        error: ProviderError | None = None
        try:
            async for t in stream:
                if not self._post(Heard(t, stream)):
                    return
        except ProviderError as exc:
            error = exc
        self._post(SttEnded(stream, error))

    def _on_stt_ended(self, item: SttEnded, now: float) -> None:
        if item.stream is not self._stt_stream or item.error is None:
            return  # a replaced stream, or completed after end_input()
        error = item.error
        self._stt_failures += 1
        limit = self.options.max_stt_restarts
        if unrecoverable(error) or (limit is not None and self._stt_failures > limit):
            self._fail(error, "stt", f"speech recognition failed: {error}")
            return
        self._emit(AgentError("stt", error, True, self._machine.generation))
        self._tasks.spawn(_aclose(item.stream), name="stt-close")
        self._stt_stream = None
        # a new stream after a backoff (never N attempts in the same millisecond); the
        # audio meanwhile is lost, and so is the turn it belonged to
        delay = self.options.stt_backoff.delay(self._stt_failures - 1)
        self._stt_reopen = self._tasks.spawn(self._reopen_stt(delay), name="stt-reopen")
        self._run(SttFailed(now))

    async def _reopen_stt(self, delay: float) -> None:
        await self.clock.sleep_until(self.clock.now() + delay)
        self._post(ReopenStt())


async def _aclose(stream: RecognizeStream) -> None:
    await stream.aclose()


def unrecoverable(error: ProviderError) -> bool:
    """An error no retry or new stream can mend: the credentials or the account."""
    if isinstance(error, AuthError):
        return True
    return not error.retryable and "quota" in str(error).lower()
