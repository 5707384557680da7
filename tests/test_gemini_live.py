"""GeminiLive: the realtime conformance suite on the Gemini Live fake, plus plugin checks.

Where a case of the suite assumes the OpenAI Realtime schema (``session.update`` mid-session,
``response.cancel``/``conversation.item.truncate``, an ``error`` event, items), it is
overridden here with an assertion of what Gemini Live really does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import StreamResampler
from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.plugins.gemini import GeminiLive
from antiphon.services.realtime import (
    AgentAudio,
    AgentTranscriptDelta,
    FunctionCall,
    RealtimeDeadlines,
    RealtimeError,
    RealtimeModel,
    Reconnected,
    ResponseDone,
    SessionState,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
)
from antiphon.testing.conformance.realtime import (
    FAST,
    WEATHER,
    RealtimeConformance,
    RealtimeHarness,
    audio_of,
    eventually,
    speech,
    turn,
)
from antiphon.testing.faults import FaultPlan
from antiphon.testing.gemini_live import (
    DEFAULT_API_KEY,
    FakeGeminiLiveServer,
    GeminiLiveFakeStats,
)
from antiphon.testing.synth import tone_for_text

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class GeminiHarness(RealtimeHarness[FakeGeminiLiveServer]):
    input_rates = (16000,)

    def fake(self, plan: FaultPlan, **kwargs: Any) -> FakeGeminiLiveServer:
        return FakeGeminiLiveServer(plan, **kwargs)

    def make_model(
        self, base_url: str, *, deadlines: RealtimeDeadlines, **kwargs: Any
    ) -> RealtimeModel:
        kwargs.pop("input_sample_rate", None)
        if "turn_detection" in kwargs:
            kwargs["automatic_activity_detection"] = kwargs.pop("turn_detection") is not None
        return GeminiLive(base_url=base_url, api_key=DEFAULT_API_KEY, deadlines=deadlines, **kwargs)

    def other_voice(self) -> Any:
        return "Kore"


class TestGeminiLiveConformance(RealtimeConformance[FakeGeminiLiveServer]):
    harness = GeminiHarness()

    # -- cases whose OpenAI-schema premise does not hold for Gemini Live: what really happens

    async def test_voice_turn_with_server_vad(self) -> None:
        """Gemini's server activity detection sends no speech started/stopped events; the
        turn shows as the input transcription, then the answer. Input goes out at 16 kHz."""
        async with (
            self.run(fake_kwargs={"transcripts": ("book a table",)}) as r,
            r.model.session() as s,
        ):
            for f in speech(0.6, 24000).split(0.02):
                s.push_audio(f)
            for f in AudioFrame.silence(0.8, 24000).split(0.02):
                s.push_audio(f)
            events = await turn(s)
            assert not any(isinstance(e, UserSpeechStarted | UserSpeechStopped) for e in events)
            said = next(e for e in events if isinstance(e, UserTranscript))
            assert said.text == "book a table"
            assert audio_of(events) == tone_for_text(r.fake.expected_reply("book a table"), 24000)
            wire = len(r.fake.stats.audio_in) / 2  # samples at 16 kHz (the resampler keeps a tail)
            assert 0.97 * 1.4 * 16000 <= wire <= 1.4 * 16000

    async def test_update_sends_the_new_configuration(self) -> None:
        """The Live API takes ``setup`` once per connection: update() moves the session, at
        a quiet moment, to a new connection whose setup resumes it with the server's handle
        and carries the change (a new voice too); nothing is replayed."""
        async with self.run() as r, r.model.session() as s:
            s.send_text("hi")
            await turn(s)
            s.update(instructions="Be brief.", voice="Charon", tools=[WEATHER])
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and rec.replayed_items == 0
            assert not rec.lost_response and s.reconnects == 0 and s.resumptions == 1
            stats = r.fake.stats
            assert stats.session_updates == 2 and stats.connections == 2
            last = stats.sessions[-1]
            assert "Be brief." in json.dumps(last) and "get_weather" in json.dumps(last)
            voice = last["generationConfig"]["speechConfig"]["voiceConfig"]
            assert voice == {"prebuiltVoiceConfig": {"voiceName": "Charon"}}
            assert stats.resumed == [(1, last["sessionResumption"]["handle"])]
            s.send_text("again")
            events = await turn(s)
            assert audio_of(events) == tone_for_text(r.fake.expected_reply("again"), 24000)
            assert [c for c, _ in stats.turns] == [0, 1]  # the conversation was not replayed
            with pytest.raises(ConfigError, match="not a Gemini prebuilt voice"):
                s.update(voice="alloy")

    async def test_error_event_mid_response(self) -> None:
        """Gemini has no error message: the server closes (1011), and the session moves to a
        new connection, losing the partly heard response."""
        plan = FaultPlan(error_mid_stream=True, close_after_chunks=2)
        async with self.run(plan) as r, r.model.session() as s:
            s.send_text("This one fails half way.")
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and rec.lost_response
            assert not any(isinstance(e, RealtimeError) for e in events)
            assert r.fake.stats.closes_sent[0] == 1011 and r.fake.stats.connections == 2
            assert s.state is SessionState.RUNNING

    async def test_audio_after_response_done_is_dropped(self) -> None:
        """Gemini's messages carry no turn id: with activity detection on, audio after
        ``turnComplete`` cannot be told from a server-detected turn, so it opens one (the
        next request's answer follows in it); with detection off nobody asked, so it is
        dropped."""
        async with self.run(FaultPlan(audio_after_done=3)) as r, r.model.session() as s:
            s.send_text("First turn.")
            a1 = audio_of(await turn(s))
            assert a1 == tone_for_text(r.fake.expected_reply("First turn."), 24000)
            await asyncio.sleep(0.3)  # the stale audio has arrived
            s.send_text("Second turn.")
            done = await turn(s, lambda e: isinstance(e, ResponseDone) and e.status == "completed")
            reply = tone_for_text(r.fake.expected_reply("Second turn."), 24000)
            a2 = audio_of(done)
            assert a2.endswith(reply) and len(a2) > len(reply)
        plan = FaultPlan(audio_after_done=3)
        async with self.run(plan, turn_detection=None) as r, r.model.session() as s:
            s.send_text("First turn.")
            a1 = audio_of(await turn(s))
            await asyncio.sleep(0.3)  # the stale audio has arrived (and was dropped)
            s.send_text("Second turn.")
            a2 = audio_of(await turn(s))
            assert a1 == tone_for_text(r.fake.expected_reply("First turn."), 24000)
            assert a2 == tone_for_text(r.fake.expected_reply("Second turn."), 24000)

    async def test_mono_with_an_even_sample_count_is_not_treated_as_stereo(self) -> None:
        """As in the suite, at Gemini's wire rate (16 kHz)."""
        rng = np.random.default_rng(4)
        mono = rng.integers(-8000, 8000, size=320, dtype=np.int16)
        async with self.run(turn_detection=None) as r, r.model.session() as s:
            s.push_audio(AudioFrame.from_array(mono, 16000))
            stereo = np.stack([mono, np.zeros_like(mono)], axis=1)
            s.push_audio(AudioFrame.from_array(stereo, 16000))
            s.say("ok")
            await turn(s)
            got = np.frombuffer(bytes(r.fake.stats.audio_in), dtype="<i2")
            assert np.array_equal(got[:320], mono)
            assert np.array_equal(got[320:640], np.rint(mono / 2).astype(np.int16))
            kinds = [next(iter(m["realtimeInput"])) for m in r.fake.stats.messages[1:3]]
            assert kinds == ["activityStart", "audio"]  # detection off: the client marks turns

    async def test_chunked_input_is_resampled_continuously(self) -> None:
        """24 kHz in, 16 kHz on the wire; ``commit_audio()`` sends ``activityEnd``."""
        sig = speech(0.5, 24000, freq=440.0)
        async with self.run(turn_detection=None) as r, r.model.session() as s:
            for f in sig.split(0.02):
                s.push_audio(f)
            s.commit_audio()
            events = await turn(s)
            got = bytes(r.fake.stats.audio_in)
            assert audio_of(events) == tone_for_text(r.fake.expected_reply("hello there"), 24000)
        whole = StreamResampler(24000, 16000)
        assert got == whole.process(sig).data + whole.flush().data

    async def test_unknown_voice_type_is_refused(self) -> None:
        """Gemini voices are prebuilt names (a str)."""
        async with self.run() as r:
            bad: Any = {"name": "x", "type": "azure-standard"}
            with pytest.raises(ConfigError, match="prebuilt voice"):
                self.harness.make_model(r.fake.url, deadlines=FAST, voice=bad)
            with pytest.raises(ConfigError, match="prebuilt voice"):
                self.harness.make_model(r.fake.url, deadlines=FAST, voice=" ")

    async def test_interrupt_truncates_at_the_played_position(self) -> None:
        """Gemini has no cancel or truncate message: the rest of the turn is dropped here
        and the turn ends ``cancelled`` at its ``turnComplete``; the connection stays."""
        plan = FaultPlan(chunk_interval=0.01)
        long = "This is a long answer that the user interrupts after a moment. " * 3
        async with self.run(plan) as r, r.model.session() as s:
            s.say(long)
            got = []
            async for ev in s:
                if isinstance(ev, AgentAudio):
                    got.append(ev)
                    if len(got) == 5:
                        break
            old = got[0].generation
            sent = len(r.fake.stats.messages)
            s.interrupt(played=0.1)
            rest = await turn(s)
            assert not any(
                isinstance(e, AgentAudio | AgentTranscriptDelta) and e.generation <= old
                for e in rest
            )
            done = rest[-1]
            assert isinstance(done, ResponseDone) and done.status == "cancelled"
            assert len(r.fake.stats.messages) == sent  # nothing to tell the server
            s.say("Next turn.")
            nxt = await turn(s)
            assert audio_of(nxt) == tone_for_text("Next turn.", 24000)
            assert all(e.generation > old for e in nxt if isinstance(e, AgentAudio))
            assert r.fake.stats.connections == 1

    async def test_interrupt_drops_queued_audio_at_once(self) -> None:
        """Queued audio is dropped; the turn had completed, so its end stays ``completed``."""
        async with self.run() as r, r.model.session() as s:
            s.say("An answer that is fully queued before the user interrupts it.")
            first = await anext(s)
            while not isinstance(first, AgentAudio):
                first = await anext(s)
            await asyncio.sleep(0.3)
            s.interrupt()
            rest = await turn(s, lambda e: isinstance(e, ResponseDone))
            assert not [e for e in rest if isinstance(e, AgentAudio)]
            assert isinstance(rest[-1], ResponseDone) and rest[-1].status == "completed"
            assert r.fake.stats.connections == 1

    async def test_function_call_round_trip(self) -> None:
        """``toolCall`` → FunctionCall (the turn ends there); the result goes back as a
        ``toolResponse`` with the call's id and name, and the model goes on."""
        async with self.run(tools=[WEATHER]) as r, r.model.session() as s:
            s.send_text("What is the weather in Paris?")
            events = await turn(s, lambda e: isinstance(e, FunctionCall))
            call = events[-1]
            assert isinstance(call, FunctionCall) and call.name == "get_weather"
            assert json.loads(call.arguments) == {"query": "What is the weather in Paris?"}
            await turn(s)
            s.send_tool_result(call.call_id, '{"sky": "sunny"}')
            events = await turn(s)
            assert audio_of(events) == tone_for_text('The tool says {"sky":"sunny"}', 24000)
            stats = r.fake.stats
            assert isinstance(stats, GeminiLiveFakeStats)
            assert stats.tool_responses == [
                {"id": call.call_id, "name": "get_weather", "response": {"sky": "sunny"}}
            ]

    async def test_go_away_at_the_session_limit_then_a_new_connection(self) -> None:
        """At its connection limit the server says ``goAway`` and closes (1001); the session
        moves to a new connection and the next turn is answered there."""
        async with self.run(FaultPlan(max_connection_age=0.5)) as r, r.model.session() as s:
            s.send_text("Before the limit.")
            await turn(s)
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            assert isinstance(events[-1], Reconnected)
            stats = r.fake.stats
            assert isinstance(stats, GeminiLiveFakeStats)
            assert {"goAway": {"timeLeft": "0s"}} in stats.sent and stats.closes_sent[0] == 1001
            s.send_text("After the limit.")
            events = await turn(s)
            reply = r.fake.expected_reply("After the limit.")
            assert audio_of(events) == tone_for_text(reply, 24000)

    async def test_go_away_moves_the_session_with_its_handle(self) -> None:
        """``goAway`` with time left: the session resumes on a new connection with the
        newest handle before the server cuts the old one; the conversation goes on there
        (the server kept it) and nothing is lost."""
        fake = {"go_away_after": 0.5, "go_away_notice": 2.0}
        async with self.run(fake_kwargs=fake) as r, r.model.session() as s:
            s.send_text("Before the notice.")
            await turn(s)
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and rec.replayed_items == 0
            assert not rec.lost_response and not rec.response_requested
            stats = r.fake.stats
            assert stats.go_aways == 1 and s.resumptions == 1 and s.reconnects == 0
            assert stats.resumed == [(1, stats.handles[-2])]  # the newest before the move
            assert 1001 not in stats.closes_sent  # moved before the cut
            s.send_text("After the move.")
            events = await turn(s)
            reply = r.fake.expected_reply("After the move.")
            assert audio_of(events) == tone_for_text(reply, 24000)
            assert [c for c, _ in stats.turns] == [0, 1]

    async def test_go_away_mid_answer_waits_for_its_end(self) -> None:
        """A ``goAway`` while the model speaks: the move waits for the end of the answer
        (and its handle), within half the time left, so the answer is heard whole."""
        text = "A long answer that is still being spoken when the server gives notice."
        fake = {"go_away_after": 0.1, "go_away_notice": 4.0}
        plan = FaultPlan(chunk_interval=0.01)
        async with self.run(plan, fake_kwargs=fake) as r, r.model.session() as s:
            s.say(text)
            events = await turn(s)
            assert r.fake.stats.go_aways == 1
            assert audio_of(events) == tone_for_text(text, 24000)
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and not rec.lost_response
            assert s.resumptions == 1 and r.fake.stats.connections == 2

    async def test_go_away_without_resumption_reconnects_or_fails_typed(self) -> None:
        """Without resumption handles the move is an ordinary reconnect (the text of the
        conversation replayed); with no reconnect left the session fails with a typed
        error that names the notice, never a silent drop."""
        fake = {"go_away_after": 0.5, "go_away_notice": 2.0}
        async with (
            self.run(fake_kwargs=fake, session_resumption=False) as r,
            r.model.session() as s,
        ):
            s.send_text("Remember 7.")
            await turn(s)
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and rec.replayed_items == 2
            assert s.reconnects == 1 and s.resumptions == 0
            assert "sessionResumption" not in r.fake.stats.sessions[-1]
        async with (
            self.run(fake_kwargs=fake, session_resumption=False, max_reconnects=0) as r,
            r.model.session() as s,
        ):
            with pytest.raises(ProviderConnectionError, match="goAway") as info:
                async for _ in s:
                    pass
            assert info.value.code == 1001 and s.state is SessionState.FAILED
            assert r.fake.stats.go_aways == 1

    async def test_reconnect_restores_instructions_voice_tools_and_conversation(self) -> None:
        async with (
            self.run(instructions="You are terse.", tools=[WEATHER], voice="Kore") as r,
            r.model.session() as s,
        ):
            s.send_text("Remember the number 42.")
            await turn(s)
            r.fake.kick(1011)
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and rec.replayed_items == 2
            restored = json.dumps(r.fake.stats.sessions[-1])
            assert "You are terse." in restored and "get_weather" in restored
            assert '"voiceName": "Kore"' in restored
            stats = r.fake.stats
            assert isinstance(stats, GeminiLiveFakeStats)
            await eventually(lambda: sum(c == 1 for c, _ in stats.turns) >= 2)
            replayed = [(t["role"], t["parts"][0]["text"]) for c, t in stats.turns if c == 1]
            reply = r.fake.expected_reply("Remember the number 42.")
            assert replayed == [("user", "Remember the number 42."), ("model", reply)]
            s.send_text("What was the number?")
            events = await turn(s)
            assert audio_of(events) == tone_for_text(
                r.fake.expected_reply("What was the number?"), 24000
            )


# --------------------------------------------------------------------------- plugin checks


def test_key_comes_from_google_then_gemini_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY"):
        GeminiLive()
    monkeypatch.setenv("GEMINI_API_KEY", "g2")
    assert GeminiLive()._key == "g2"
    monkeypatch.setenv("GOOGLE_API_KEY", "g1")
    model = GeminiLive()
    assert model._key == "g1"
    assert model.url.startswith(
        "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta."
        "GenerativeService.BidiGenerateContent"
    )


async def test_headers_carry_the_key_and_never_the_url() -> None:
    model = GeminiLive(api_key="secret")
    assert await model.connect_headers() == {"x-goog-api-key": "secret"}
    assert "secret" not in model.url
    await model.aclose()


@pytest.mark.parametrize(
    ("code", "reason", "kind", "retryable"),
    [
        (1007, "API key not valid. Please pass a valid API key.", AuthError, False),
        (1008, "Permission denied", AuthError, False),
        (1007, "Request contains an invalid argument.", ProviderError, False),
        (1011, "Internal error encountered.", None, True),
    ],
)
def test_close_codes_are_typed(code: int, reason: str, kind: Any, retryable: bool) -> None:
    err = GeminiLive(api_key="k").close_error(code, reason, stage="receive")
    if kind is AuthError:
        assert isinstance(err, AuthError)
    else:
        assert not isinstance(err, AuthError)
    assert err.retryable is retryable and err.code == code
