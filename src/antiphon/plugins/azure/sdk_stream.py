"""One synthesis on an Azure Speech SDK synthesizer: text in, PCM frames and words out.

How it is built: :class:`AzureSdkSynthesisStream` runs one loop over its mailbox, where
both the text the caller pushes and the worker's
:mod:`~antiphon.plugins.azure.sdk_events` arrive. Each flush segment is one text-stream
request; requests are handed to the SDK one at a time (its events do not say which
request they belong to, so audio order is kept by construction). Audio of the oldest
request becomes frames (mu-law/a-law decoded, 16-bit samples kept whole across chunks);
word boundaries become the stream's ``words``, offset by where that request's audio
begins; a request that fails before any audio is replayed once. Deadlines: ``connect``
while the connection is down, ``first_audio`` then ``idle`` once a request is closed.
Whenever a request is handed to a synthesizer that is not connected, the stream probes the
endpoint alongside (:mod:`~antiphon.net.probe`, one task at a time, which
the stream cancels and awaits when it ends): a refusal arrives as
:class:`~antiphon.plugins.azure.sdk_events.Refused` and fails the stream at once, since
the SDK may never report it.
Why a module of its own: this is what is said and heard, apart from the thread that makes
the SDK calls (:mod:`~antiphon.plugins.azure.sdk_worker`) and the plugin that pools them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from antiphon import metrics
from antiphon.aio.channel import ChannelClosed
from antiphon.aio.tasks import cancel_and_wait, reap
from antiphon.audio.codecs import decode_to_pcm
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ProviderError, ProviderTimeoutError
from antiphon.plugins.azure.sdk_events import Audio, Connected, Done, Refused, Started, Word
from antiphon.plugins.azure.sdk_worker import SdkWorker
from antiphon.protocols import azure_tts as az
from antiphon.services.tts import (
    EndInput,
    FlushInput,
    SynthesisStream,
    TextInput,
    WordTiming,
)

if TYPE_CHECKING:
    from antiphon.plugins.azure.sdk import AzureSdkTTS

__all__ = ["AzureSdkSynthesisStream"]

log = logging.getLogger("antiphon.plugins.azure.sdk")  # the plugin's logger, as ever


@dataclass
class _Request:
    rid: int
    journal: list[str] = field(default_factory=list)
    closed: bool = False
    result_id: str | None = None
    heard: bool = False
    replayed: bool = False
    begun: bool = False  # handed to the SDK (one request at a time, see _begin)
    audio_at: float | None = None  # the stream's audio seconds where this request's begin


class AzureSdkSynthesisStream(SynthesisStream):
    """One synthesis on a synthesizer of an :class:`AzureSdkTTS`."""

    def __init__(self, tts: AzureSdkTTS, generation: int) -> None:
        self._tts = tts
        self._worker: SdkWorker | None = None
        self._probe: asyncio.Task[None] | None = None
        self._carry = b""
        self._rids = itertools.count(1)
        super().__init__(
            provider=tts.provider,
            sample_rate=tts.sample_rate,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=tts.deadlines.close,
            word_timings=tts.word_timings,
        )

    async def _run(self) -> None:
        ok = False
        try:
            await self._loop()
            ok = True
        finally:
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.detach()
                self._tts._return(worker, reusable=ok)

    async def _worker_for_stream(self) -> SdkWorker:
        if self._worker is None:
            worker = await self._tts._acquire()
            self._worker = worker
            worker.attach(self._mailbox)
        return self._worker

    async def _begin(self, reqs: deque[_Request], journal: list[str]) -> _Request:
        """A new request; handed to the SDK now only if no other one is in flight.

        The SDK may run queued requests on several connections at once and its events do
        not say which request they belong to, so audio order is kept by construction:
        the next request starts when the previous one is done (see :meth:`_start`).
        """
        req = _Request(next(self._rids), journal=list(journal))
        reqs.append(req)
        if len(reqs) == 1:
            await self._start(req)
        return req

    async def _start(self, req: _Request) -> None:
        worker = await self._worker_for_stream()
        req.begun = True
        if not worker.connected:
            self._start_probe(worker)
        await worker.begin(req.rid, self._tts.voice, timeout=self._tts.deadlines.connect)
        if req.journal:
            await worker.write(req.rid, "".join(req.journal), timeout=self._tts.deadlines.idle)
        if req.closed:
            await worker.finish(req.rid, timeout=self._tts.deadlines.idle)

    def _start_probe(self, worker: SdkWorker) -> None:
        """Probe the endpoint while ``worker`` connects, unless a probe runs already."""
        if self._tts.probe_target is None or (self._probe is not None and not self._probe.done()):
            return
        task = asyncio.get_running_loop().create_task(
            self._run_probe(worker), name=f"{self.provider}-stream-probe"
        )
        task.add_done_callback(reap)
        self._probe = task

    async def _run_probe(self, worker: SdkWorker) -> None:
        try:
            async with asyncio.timeout(self._tts.deadlines.connect):
                why = await self._tts.probe(worker)
        except TimeoutError:
            return  # the stream's own connect deadline ends the wait
        if why is not None:
            with contextlib.suppress(ChannelClosed):  # the stream has ended meanwhile
                self._mailbox.send_nowait(Refused(why))

    async def _cleanup(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            await cancel_and_wait([probe], timeout=self._tts.deadlines.close, what="azure probe")
            if probe.done() and not probe.cancelled() and probe.exception() is not None:
                log.warning("%s: the endpoint probe failed: %r", self.provider, probe.exception())

    async def _loop(self) -> None:
        tts = self._tts
        d = tts.deadlines
        loop = asyncio.get_running_loop()
        reqs: deque[_Request] = deque()  # spoken and not finished, oldest first
        open_req: _Request | None = None
        pending_space = ""
        ended = False
        progress = loop.time()
        connect_since: float | None = None
        while True:
            worker = self._worker
            when: float | None = None
            timeout = 0.0
            stage = message = ""
            if worker is not None and reqs:
                if not worker.connected:
                    if connect_since is None:
                        connect_since = loop.time()
                    when, timeout, stage = connect_since + d.connect, d.connect, "connect"
                    message = "could not connect to the Speech service"
                elif reqs[0].closed:
                    heard = reqs[0].heard
                    timeout = d.idle if heard else d.first_audio
                    when, stage = progress + timeout, "receive"
                    message = (
                        "audio stopped before the synthesis finished"
                        if heard
                        else "no audio after the text was sent"
                    )
            try:
                async with asyncio.timeout_at(when):
                    item = await self._mailbox.recv()
            except TimeoutError:
                raise ProviderTimeoutError(
                    message,
                    provider=self.provider,
                    stage=stage,
                    timeout=timeout,
                    hint="the synthesizer is stopped and closed",
                ) from None
            if isinstance(item, TextInput):
                text = item.text
                if open_req is None:
                    if not text.strip():
                        pending_space += text
                        continue
                    text, pending_space = pending_space + text, ""
                    open_req = await self._begin(reqs, [])
                open_req.journal.append(text)
                if open_req.begun:
                    assert self._worker is not None
                    await self._worker.write(open_req.rid, text, timeout=d.idle)
            elif isinstance(item, FlushInput | EndInput):
                if open_req is not None:
                    open_req.closed = True
                    if reqs[0] is open_req:
                        progress = loop.time()
                    if open_req.begun:
                        assert self._worker is not None
                        await self._worker.finish(open_req.rid, timeout=d.idle)
                    open_req = None
                if isinstance(item, EndInput):
                    ended = True
                if ended and not reqs:
                    return self._end_audio()
            elif isinstance(item, Refused):
                # The SDK's connection is refused as well, and it may never say so.
                if worker is not None and not worker.connected and reqs and not reqs[0].heard:
                    raise tts.refused_error(item.details)
            elif isinstance(item, Connected):
                # Lost between requests: the clock starts when the next one begins.
                connect_since = None if item.up or not reqs else loop.time()
            elif isinstance(item, Started):
                for req in reqs:
                    if req.begun and req.result_id is None:
                        req.result_id = item.result_id
                        break
            elif isinstance(item, Audio):
                head = reqs[0] if reqs else None
                if head is None or (head.result_id not in (None, item.result_id)):
                    metrics.TTS_DROPPED_MESSAGES.labels(self.provider, "stale").inc()
                    continue
                if not head.heard:
                    metrics.TTS_TTFB.labels(self.provider).observe(loop.time() - progress)
                    if head.audio_at is None:
                        head.audio_at = self.audio_seconds
                head.heard = True
                progress = loop.time()
                self._deliver(item.data)
            elif isinstance(item, Word):
                head = reqs[0] if reqs else None
                if head is None or head.result_id != item.result_id:
                    continue  # of a request already finished or not ours
                if head.audio_at is None:  # before its audio: the earlier ones are all out
                    head.audio_at = self.audio_seconds
                word = WordTiming(item.word, item.start, item.end)
                self._emit_words((word,), head.audio_at)
            elif isinstance(item, Done):
                if not reqs:
                    continue
                head = reqs.popleft()
                assert self._worker is not None
                await self._reap(self._worker, head)
                progress = loop.time()
                if item.error is not None:
                    replacement = await self._recover(head, item.error, reqs, open_req)
                    if replacement is not None and head is open_req:
                        open_req = replacement
                    if replacement is not None:
                        # A replay is a new attempt: it gets its own connect deadline.
                        connect_since = None
                        continue
                if head is open_req:  # finished while still open: nothing more to say
                    open_req = None
                if ended and not reqs:
                    return self._end_audio()
                if reqs and not reqs[0].begun:
                    await self._start(reqs[0])
                    progress = loop.time()

    async def _reap(self, worker: SdkWorker, req: _Request) -> None:
        try:
            await worker.reap(req.rid, timeout=self._tts.deadlines.close)
        except ProviderError as exc:
            # The audio is complete; the synthesizer is not trusted again.
            log.warning("%s: %s", self.provider, exc)

    async def _recover(
        self,
        head: _Request,
        error: tuple[str, str, str],
        reqs: deque[_Request],
        open_req: _Request | None,
    ) -> _Request | None:
        """Replay a request that failed before any of its audio, once; else raise."""
        reason, code, details = error
        worker = self._worker
        assert worker is not None
        if reason == "CancelledByUser":
            raise ProviderError(
                f"the synthesis was stopped: {' '.join(details.split())[:200]}",
                provider=self.provider,
                stage="receive",
            )
        stage = "connect" if not head.heard and not worker.connected else "receive"
        exc = az.sdk_error(code, details, stage=stage)
        if not exc.retryable or head.heard or head.replayed or reqs:
            raise exc
        log.info("%s: %s; replaying the request", self.provider, exc)
        journal = head.journal
        replacement = _Request(next(self._rids), journal=list(journal), replayed=True)
        replacement.closed = head.closed
        reqs.append(replacement)
        await self._start(replacement)
        return replacement

    def _deliver(self, data: bytes) -> None:
        encoding = self._tts.output_format.encoding
        if encoding == "linear16":
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                data, self._carry = data[:-1], data[-1:]
        else:
            data = decode_to_pcm(encoding, data)
        if data:
            self._emit(AudioFrame(data, self.sample_rate, 1, self.generation))

    def _end_audio(self) -> None:
        if self._carry:
            log.warning("%s: dropped a trailing odd byte of 16-bit audio", self.provider)
            self._carry = b""
