"""The worker thread of one Speech SDK synthesizer: every SDK call, and the six-step close.

How it is built: :class:`SdkWorker` owns one daemon thread that runs jobs from a queue;
each job is a function of the :class:`~antiphon.plugins.azure.sdk_native.Native` objects,
and its result settles an asyncio future on the event loop (``call_soon_threadsafe``).
The loop only waits on those futures, always within a deadline; a call that does not
return marks the worker ``stuck``. The SDK's event handlers (on the SDK's threads) only
post :mod:`~antiphon.plugins.azure.sdk_events` values to the attached stream's mailbox.
:meth:`SdkWorker.aclose` queues the close steps described in
:mod:`antiphon.plugins.azure.sdk` and joins the thread within ``deadlines.close``. Why a
module of its own: this is the lifecycle of the native synthesizer, apart from the plugin
(the pool of workers) and the stream (what is said and heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from antiphon.aio.channel import Channel, ChannelClosed
from antiphon.errors import ProviderError, ProviderTimeoutError
from antiphon.plugins.azure.sdk_events import Audio, Connected, Done, Started, Word, enum_name
from antiphon.plugins.azure.sdk_native import (
    Native,
    build_native,
    close_inputs,
    disconnect_signals,
    drop_native,
    unlink_request,
)
from antiphon.protocols import azure_tts as az

if TYPE_CHECKING:
    from antiphon.plugins.azure.sdk import AzureSdkTTS, SdkSettings

__all__ = ["SdkWorker"]

log = logging.getLogger("antiphon.plugins.azure.sdk")  # the plugin's logger, as ever
PROVIDER = az.PROVIDER
T = TypeVar("T")
_ids = itertools.count(1)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class SdkWorker:
    """One Speech SDK synthesizer and the one thread that makes all of its calls.

    Loop side: :meth:`call` runs a function of the native objects on the thread and waits
    for it within a deadline; events arrive via :meth:`attach`'s channel. ``connected``
    and ``stuck`` are only read and written on the event loop.
    """

    def __init__(self, tts: AzureSdkTTS, loop: asyncio.AbstractEventLoop) -> None:
        self.id = next(_ids)
        self._tts = tts
        self._loop = loop
        self._jobs: queue.SimpleQueue[Callable[[Native], None] | None] = queue.SimpleQueue()
        self._native = Native()
        self._done_cv = threading.Condition()
        self._done_count = 0  # done events so far (guarded by _done_cv)
        self._thread = threading.Thread(target=self._main, name=f"azure-sdk-{self.id}", daemon=True)
        self._exited: asyncio.Future[None] = loop.create_future()
        self._sink: Channel[object] | None = None
        self._close_steps: list[tuple[asyncio.Future[Any], str]] | None = None
        self._close_deadline = 0.0
        self.connected = False
        self.up = asyncio.Event()  # mirrors ``connected``, to wait for it
        self.stuck: str | None = None
        self.begun = 0
        self.done = 0
        self.dropped_events = 0

    def __repr__(self) -> str:
        return f"<SdkWorker #{self.id} connected={self.connected} stuck={self.stuck}>"

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def reusable(self) -> bool:
        """Healthy and idle: nothing outstanding, not closing, no call hanging."""
        return (
            self.stuck is None
            and self._close_steps is None
            and self.begun == self.done
            and self._thread.is_alive()
        )

    # -- from other threads
    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
            self._loop.call_soon_threadsafe(fn, *args)

    def _count_done(self) -> None:
        with self._done_cv:
            self._done_count += 1
            self._done_cv.notify_all()

    def _main(self) -> None:
        native = self._native
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                job(native)
        finally:
            drop_native(native)  # normally done by the close steps already; idempotent
            self._post(_settle, self._exited, None, None)

    def _callbacks(self) -> dict[str, Callable[[Any], None]]:
        """SDK event handlers: they run on the SDK's threads and only hand events over."""
        post = self._post

        def started(evt: Any) -> None:
            with contextlib.suppress(Exception):
                post(self._deliver, Started(str(evt.result.result_id)))

        def audio(evt: Any) -> None:
            with contextlib.suppress(Exception):
                r = evt.result
                post(self._deliver, Audio(str(r.result_id), bytes(r.audio_data)))

        def completed(evt: Any) -> None:
            with contextlib.suppress(Exception):
                self._count_done()
                post(self._deliver, Done(str(evt.result.result_id), None))

        def canceled(evt: Any) -> None:
            with contextlib.suppress(Exception):
                self._count_done()
                r = evt.result
                d = r.cancellation_details
                info = (enum_name(d.reason), enum_name(d.error_code), str(d.error_details or ""))
                post(self._deliver, Done(str(r.result_id), info))

        def word(evt: Any) -> None:
            with contextlib.suppress(Exception):
                if enum_name(evt.boundary_type) != "Word":
                    return  # punctuation and sentence boundaries
                start = evt.audio_offset / 10_000_000  # 100 ns ticks
                duration = evt.duration
                seconds = (
                    duration.total_seconds()
                    if hasattr(duration, "total_seconds")
                    else float(duration) / 10_000_000
                )
                item = Word(str(evt.result_id), str(evt.text), start, start + seconds)
                post(self._deliver, item)

        def connected(evt: Any) -> None:
            post(self._deliver, Connected(True))

        def disconnected(evt: Any) -> None:
            post(self._deliver, Connected(False))

        return {
            "started": started,
            "audio": audio,
            "completed": completed,
            "canceled": canceled,
            "connected": connected,
            "disconnected": disconnected,
            "word": word,
        }

    # -- loop side
    def _deliver(self, event: object) -> None:
        if isinstance(event, Connected):
            self.connected = event.up
            if event.up:
                self.up.set()
            else:
                self.up.clear()
        elif isinstance(event, Done):
            self.done += 1
        sink = self._sink
        if sink is None or sink.closed:
            self.dropped_events += 1  # between streams, or after close: nobody's
            return
        with contextlib.suppress(ChannelClosed):
            sink.send_nowait(event)

    def attach(self, sink: Channel[object]) -> None:
        """Send this synthesizer's events to ``sink`` (a stream's mailbox)."""
        self._sink = sink

    def detach(self) -> None:
        self._sink = None

    def submit(self, fn: Callable[[Native], T]) -> asyncio.Future[T]:
        """Run ``fn(native)`` on the worker thread; the future resolves on the loop."""
        fut: asyncio.Future[T] = self._loop.create_future()
        fut.add_done_callback(_retrieve)  # a caller that gave up must not log noise

        def job(native: Native) -> None:
            try:
                result = fn(native)
            except BaseException as exc:
                self._post(_settle, fut, None, exc)
            else:
                self._post(_settle, fut, result, None)

        self._jobs.put(job)
        return fut

    async def call(self, fn: Callable[[Native], T], *, what: str, stage: str, timeout: float) -> T:
        """``fn(native)`` on the worker thread within ``timeout`` seconds, errors typed."""
        if self.stuck is not None:
            raise ProviderError(
                f"the Speech SDK has not returned from {self.stuck}",
                provider=PROVIDER,
                stage=stage,
                hint="the synthesizer was abandoned; the stream cannot continue on it",
            )
        fut = self.submit(fn)
        done, _ = await asyncio.wait([fut], timeout=timeout)
        if not done:
            self.stuck = what
            raise ProviderTimeoutError(
                f"the Speech SDK did not return from {what}",
                provider=PROVIDER,
                stage=stage,
                timeout=timeout,
                hint="the synthesizer is abandoned and closed in the background",
            )
        try:
            return fut.result()
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(
                f"the Speech SDK failed in {what}: {exc}",
                provider=PROVIDER,
                stage=stage,
                hint="see the SDK's message; check the voice, output format and endpoint",
            ) from exc

    async def start(self, settings: SdkSettings, *, timeout: float) -> None:
        """Start the thread and build the config and synthesizer there."""
        self._thread.start()
        callbacks = self._callbacks()
        sdk_module = self._tts._sdk_module

        def build(native: Native) -> None:
            build_native(native, sdk_module, settings, callbacks)

        await self.call(build, what="creating the synthesizer", stage="connect", timeout=timeout)

    async def begin(self, rid: int, voice: az.Voice, *, timeout: float) -> None:
        """A new text-stream request, spoken after the ones before it."""

        def begin(native: Native) -> None:
            sdk = native.sdk
            request = sdk.SpeechSynthesisRequest(
                input_type=sdk.SpeechSynthesisRequestInputType.TextStream
            )
            for attr in ("rate", "pitch", "volume", "style"):
                value = getattr(voice, attr)
                if value is not None:
                    setattr(request, attr, value)
            future = native.synth.speak_async(request)
            native.requests[rid] = [request, future]
            native.spoken += 1
            native.unreaped.append(rid)
            native.open.add(rid)

        self.begun += 1
        try:
            await self.call(begin, what="speak_async()", stage="connect", timeout=timeout)
        except ProviderError:
            self.stuck = self.stuck or "speak_async()"  # a done event may never come
            raise

    async def write(self, rid: int, text: str, *, timeout: float) -> None:
        def write(native: Native) -> None:
            native.requests[rid][0].input_stream.write(text)

        await self.call(write, what="input_stream.write()", stage="send", timeout=timeout)

    async def finish(self, rid: int, *, timeout: float) -> None:
        def finish(native: Native) -> None:
            native.open.discard(rid)
            native.requests[rid][0].input_stream.close()

        await self.call(finish, what="input_stream.close()", stage="send", timeout=timeout)

    async def reap(self, rid: int, *, timeout: float) -> None:
        """Take the result of a finished request (``get()``) and drop the request."""

        def reap(native: Native) -> None:
            entry = native.requests.pop(rid, None)
            if entry is None:
                return
            if native.unreaped and native.unreaped[0] == rid:
                native.unreaped.popleft()
            else:
                native.unreaped.remove(rid)
            request, future = entry
            future.get()
            unlink_request(request)

        await self.call(reap, what="ResultFuture.get()", stage="close", timeout=timeout)

    async def aclose(self, *, result_wait: float = 0.0) -> bool:
        """Stop and release the synthesizer on its thread, then join the thread.

        Idempotent and safe to call from several tasks; returns within ``result_wait``
        plus ``deadlines.close`` (True if the thread ended in time). Cancelling a caller
        does not stop the sequence: the thread carries it out regardless.
        """
        self._sink = None
        d = self._tts.deadlines
        if self._close_steps is None:
            self._close_deadline = self._loop.time() + result_wait + d.close
            if not self._thread.is_alive() and not self._thread.ident:
                self._close_steps = []
                _settle(self._exited, None, None)
                return True
            cv = self._done_cv
            wait_until = time.monotonic() + result_wait

            def wait_results(native: Native) -> None:
                with cv:
                    cv.wait_for(
                        lambda: self._done_count >= native.spoken,
                        timeout=max(0.0, wait_until - time.monotonic()),
                    )

            def stop(native: Native) -> None:
                with cv:
                    outstanding = self._done_count < native.spoken
                if outstanding and native.synth is not None:
                    native.synth.stop_speaking_async().get()

            deadline_mono = time.monotonic() + result_wait + d.close

            def reap_all(native: Native) -> None:
                with cv:
                    cv.wait_for(
                        lambda: self._done_count >= native.spoken,
                        timeout=max(0.0, deadline_mono - time.monotonic()) / 2,
                    )
                    finished = min(self._done_count, native.spoken)
                # Requests finish in the order they were spoken: the oldest are done.
                reaped = native.spoken - len(native.unreaped)
                for _ in range(max(0, finished - reaped)):
                    entry = native.requests.pop(native.unreaped.popleft(), None)
                    if entry is not None:
                        entry[1].get()
                        unlink_request(entry[0])
                # Requests that never finished keep a native handle the SDK cannot free
                # without blocking forever; they are dropped with the synthesizer.

            self._close_steps = [
                (self.submit(close_inputs), "input_stream.close()"),
                (self.submit(wait_results), "waiting for the result"),
                (self.submit(stop), "stop_speaking_async().get()"),
                (self.submit(reap_all), "ResultFuture.get()"),
                (self.submit(disconnect_signals), "disconnect_all()"),
                (self.submit(drop_native), "releasing the native objects"),
            ]
            self._jobs.put(None)
        for fut, what in self._close_steps:
            remaining = self._close_deadline - self._loop.time()
            done, _ = await asyncio.wait([fut], timeout=max(0.0, remaining))
            if not done:
                log.error(
                    "azure sdk worker #%d: %s did not return within the close deadline; "
                    "the thread finishes the close by itself if it ever returns",
                    self.id,
                    self.stuck or what,
                )
                return False
            if not fut.cancelled() and fut.exception() is not None:
                log.warning("azure sdk worker #%d: %s failed: %r", self.id, what, fut.exception())
        return await self._join()

    async def _join(self) -> bool:
        remaining = max(0.0, self._close_deadline - self._loop.time())
        done, _ = await asyncio.wait([self._exited], timeout=remaining)
        # The thread has posted its exit and is past its last statement: a few polls at
        # most, where a blocking join() could stall the loop.
        while done and self._thread.is_alive() and self._loop.time() < self._close_deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        if self._thread.is_alive():
            log.error("azure sdk worker #%d: the thread did not end in time", self.id)
            return False
        self._thread.join(0)
        return True
