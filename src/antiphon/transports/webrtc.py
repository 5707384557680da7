"""A browser call over WebRTC (aiortc): Opus audio both ways, events on a data channel.

The browser posts its SDP offer to ``/webrtc/offer``; the answer carries one audio track
that plays the agent (:class:`AgentAudioTrack`) and a data channel ``events`` with the
same JSON events as the WebSocket transport (docs/transport-ws.md). The caller's track is
read by one task into ``session.push_audio``. Packet loss and jitter are WebRTC's job;
this module only converts audio: 48 kHz from the browser to the session, the session's
paced frames (silence between replies) to 48 kHz for the encoder.

Recording (optional ``recorder``, a :class:`~antiphon.audio.recording.CallRecorder`): the
caller's frames where they go to ``session.push_audio``, the agent's where the track
takes them off the session's output to send them (the silence between replies is not
fed; the recorder's timeline makes it). :meth:`WebRTCCall.aclose` closes the recorder
after the reader and the peer connection have stopped, even when it is cancelled.

NAT: the peer connection gathers candidates from the STUN/TURN servers it is given
(``antiphon serve --ice-server``, :mod:`antiphon.transports.ice`), and from none when
given none: host candidates only, and no server is contacted (aiortc's own default would
be a public STUN server). aiortc uses the first STUN and the first TURN server of the list.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame as AvFrame

from antiphon.agent.events import AgentEvent, Interrupted
from antiphon.agent.session import AgentSession
from antiphon.audio.frame import AudioFrame
from antiphon.audio.recording import CallRecorder, finish_recording
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, StreamClosedError
from antiphon.transports.ice import IceServer
from antiphon.transports.websocket import event_message

__all__ = ["AgentAudioTrack", "WebRTCCall", "rtc_configuration"]

log = logging.getLogger(__name__)
RATE = 48000
FRAME = 0.02


class AgentAudioTrack(MediaStreamTrack):
    """The agent's voice as a WebRTC audio track: 20 ms frames at 48 kHz, in real time.

    Between replies it sends silence, so the browser's playout keeps its clock.
    """

    kind = "audio"

    def __init__(self, session: AgentSession, recorder: CallRecorder | None = None) -> None:
        super().__init__()
        self._session = session
        self._recorder = recorder
        self._converter = AudioConverter(RATE, 1)
        self._pending = b""
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> AvFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._pts / RATE + FRAME
        need = round(FRAME * RATE) * 2
        while len(self._pending) < need:
            try:
                async with asyncio.timeout_at(due):
                    frame = await self._session.output.read()
            except TimeoutError:
                break  # nothing to say now: silence for this frame
            except StreamClosedError:
                self.stop()
                raise MediaStreamError from None
            recorder = self._recorder
            if recorder is not None and not recorder.closed:
                recorder.agent(frame)
            self._pending += self._converter.process(frame).data
        data, self._pending = self._pending[:need], self._pending[need:]
        data = data.ljust(need, b"\x00")
        av = AvFrame(format="s16", layout="mono", samples=need // 2)
        av.planes[0].update(data)
        av.sample_rate = RATE
        av.pts = self._pts
        av.time_base = fractions.Fraction(1, RATE)
        self._pts += need // 2
        wait = self._start + self._pts / RATE - loop.time() - FRAME
        if wait > 0:
            await asyncio.sleep(wait)
        return av

    def interrupted(self) -> None:
        """Drop what was converted and not sent (the track itself was interrupted)."""
        self._pending = b""
        self._converter.reset()


def _pcm16_mono(frame: Any) -> bytes:
    """An aiortc (PyAV) audio frame → int16 mono bytes at its rate."""
    samples = frame.to_ndarray()
    if samples.dtype != np.int16:
        samples = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    channels = len(frame.layout.channels)
    if samples.ndim == 2 and samples.shape[0] == 1 and channels > 1:  # packed stereo
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    elif samples.ndim == 2 and samples.shape[0] > 1:  # planar
        samples = samples.mean(axis=0).astype(np.int16)
    return bytes(np.ascontiguousarray(samples.reshape(-1)).data)


def rtc_configuration(servers: Sequence[IceServer] = ()) -> RTCConfiguration:
    """aiortc's configuration for these ICE servers (an empty list means none, not
    aiortc's default public STUN server)."""
    return RTCConfiguration(
        iceServers=[RTCIceServer(s.url, s.username, s.credential) for s in servers]
    )


class WebRTCCall:
    """One WebRTC call: :meth:`answer` an offer, then :meth:`wait` for the call's end.

    ``ice_servers``: the STUN/TURN servers to gather candidates from (see the module
    docstring). ``recorder``: record the call (see the module docstring).
    """

    def __init__(
        self,
        session: AgentSession,
        ice_servers: Sequence[IceServer] = (),
        *,
        recorder: CallRecorder | None = None,
    ) -> None:
        self.session = session
        self.recorder = recorder
        self.configuration = rtc_configuration(ice_servers)
        self.pc = RTCPeerConnection(self.configuration)
        self.track = AgentAudioTrack(session, recorder)
        self._channel: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._remove = session.on_event(self._on_event)
        self.frames_received = 0
        self.connected = False
        """Whether the peer connection has ever reached ``connected``."""
        self.ended: tuple[int, str] | None = None
        """Why the call was ended from outside (code, reason), if it was."""

    def end(self, code: int = 1000, reason: str = "") -> None:
        """End the call (a server shutting down, a deadline passed)."""
        if self.ended is None and not self._done.is_set():
            self.ended = (code, reason)
        self._done.set()

    async def answer(self, sdp: str, kind: str) -> RTCSessionDescription:
        if kind != "offer" or not sdp:
            raise ConfigError('POST an SDP offer: {"type": "offer", "sdp": "..."}')
        pc = self.pc

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            self._channel = channel

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and self._reader is None:
                self._reader = asyncio.get_running_loop().create_task(self._read(track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected":
                self.connected = True
            if pc.connectionState in ("failed", "closed", "disconnected"):
                self._done.set()

        pc.addTrack(self.track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription

    async def _read(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                pcm = AudioFrame(_pcm16_mono(frame), frame.sample_rate, 1)
                self.frames_received += 1
                self.session.push_audio(pcm)
                if self.recorder is not None:
                    self.recorder.user(pcm)
        except (MediaStreamError, StreamClosedError):
            pass
        finally:
            self._done.set()

    def _on_event(self, event: AgentEvent) -> None:
        if isinstance(event, Interrupted):
            self.track.interrupted()
        message = event_message(event)
        channel = self._channel
        if message is not None and channel is not None and channel.readyState == "open":
            with contextlib.suppress(Exception):
                channel.send(json.dumps(message))

    async def wait(self) -> None:
        await self._done.wait()

    async def aclose(self) -> None:
        """End the call: close the peer connection, the session and the recording
        (bounded; the recording is closed even if this is cancelled)."""
        try:
            self._remove()
            if self._reader is not None:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.pc.close()
            await self.session.aclose()
        finally:
            if self.recorder is not None:
                await finish_recording(self.recorder, "webrtc")
