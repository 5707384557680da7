"""The realtime conformance cases of a working turn: a healthy server, and issue 4's defects.

:class:`HealthyServerCases`: text and voice turns, ``say``, sessions at once, ``update``.
:class:`Issue4DefectCases`: one test per defect of issue 4 (stereo guessing, per-chunk
resampling, reordered audio, voice type guessed from the name, barge-in without
truncation, function calls, reconnect without restoring the session). Both stand on
:class:`~antiphon.testing.conformance.realtime_harness.RealtimeSuiteBase`; the suite
(:class:`~antiphon.testing.conformance.realtime.RealtimeConformance`) inherits them.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import StreamResampler
from antiphon.errors import ConfigError
from antiphon.protocols.realtime import Voice
from antiphon.services.realtime import (
    AgentAudio,
    AgentTranscriptDelta,
    AgentTranscriptDone,
    FunctionCall,
    RealtimeModel,
    Reconnected,
    ResponseDone,
    SessionReady,
    SessionState,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
)
from antiphon.testing.conformance.realtime_harness import (
    FAST,
    WEATHER,
    FakeT,
    RealtimeSuiteBase,
    audio_of,
    eventually,
    speech,
    turn,
)
from antiphon.testing.faults import FaultPlan
from antiphon.testing.synth import tone_for_text

__all__ = ["HealthyServerCases", "Issue4DefectCases"]


class HealthyServerCases(RealtimeSuiteBase[FakeT]):
    """A healthy server: every kind of turn completes with the right audio."""

    async def test_text_turn_speaks_the_reply_and_completes(self) -> None:
        async with self.run() as r, r.model.session() as s:
            s.send_text("What time is it?")
            events = await turn(s)
            reply = r.fake.expected_reply("What time is it?")
            assert audio_of(events) == tone_for_text(reply, 24000)
            deltas = "".join(e.text for e in events if isinstance(e, AgentTranscriptDelta))
            done = [e for e in events if isinstance(e, AgentTranscriptDone)]
            assert deltas == reply and done[0].text == reply
            end = events[-1]
            assert isinstance(end, ResponseDone) and end.status == "completed"
            assert end.usage is not None and end.usage.total_tokens == 30
            gens = {e.generation for e in events if isinstance(e, AgentAudio)}
            assert gens == {end.generation}
            assert all(
                e.frame.generation == end.generation for e in events if isinstance(e, AgentAudio)
            )

    async def test_session_ready_is_the_first_event(self) -> None:
        async with self.run() as r, r.model.session() as s:
            first = await anext(s)
            assert isinstance(first, SessionReady) and first.session_id
            assert s.state is SessionState.RUNNING
            assert r.fake.stats.session_updates == 1

    async def test_say_speaks_the_given_text(self) -> None:
        async with self.run() as r, r.model.session() as s:
            s.say("Welcome to antiphon.")
            events = await turn(s)
            assert audio_of(events) == tone_for_text("Welcome to antiphon.", 24000)

    async def test_voice_turn_with_server_vad(self) -> None:
        async with (
            self.run(fake_kwargs={"transcripts": ("book a table",)}) as r,
            r.model.session() as s,
        ):
            for f in speech(0.6, 24000).split(0.02):
                s.push_audio(f)
            for f in AudioFrame.silence(0.8, 24000).split(0.02):
                s.push_audio(f)
            events = await turn(s)
            kinds = [type(e) for e in events]
            assert kinds.index(UserSpeechStarted) < kinds.index(UserSpeechStopped)
            stopped = next(e for e in events if isinstance(e, UserSpeechStopped))
            assert 550 <= stopped.audio_end_ms <= 650
            said = next(e for e in events if isinstance(e, UserTranscript))
            assert said.text == "book a table"
            assert audio_of(events) == tone_for_text(r.fake.expected_reply("book a table"), 24000)

    async def test_no_task_reads_the_socket(self) -> None:
        """The connection's handler reads it: a session runs one task (its own, which
        sends), so an audio delta's one task hop is the consumer's wake-up."""
        async with self.run() as r, r.model.session() as s:
            s.send_text("What time is it?")
            events = await turn(s)
            assert audio_of(events) == tone_for_text(
                r.fake.expected_reply("What time is it?"), 24000
            )
            assert len(r.model._tasks) == 1

    async def test_many_sessions_at_once(self) -> None:
        async def one(model: RealtimeModel, i: int) -> bytes:
            async with model.session() as s:
                s.send_text(f"Session {i}")
                return audio_of(await turn(s))

        async with self.run() as r:
            got = await asyncio.gather(*(one(r.model, i) for i in range(8)))
            for i, audio in enumerate(got):
                assert audio == tone_for_text(r.fake.expected_reply(f"Session {i}"), 24000)

    async def test_update_sends_the_new_configuration(self) -> None:
        async with self.run() as r, r.model.session() as s:
            s.update(instructions="Be brief.", voice=self.harness.other_voice(), tools=[WEATHER])
            s.send_text("hi")
            await turn(s)
            assert r.fake.stats.session_updates == 2
            last = json.dumps(r.fake.stats.sessions[-1])
            assert "Be brief." in last and "get_weather" in last


class Issue4DefectCases(RealtimeSuiteBase[FakeT]):
    """One test per defect of issue 4."""

    async def test_mono_with_an_even_sample_count_is_not_treated_as_stereo(self) -> None:
        rng = np.random.default_rng(4)
        mono = rng.integers(-8000, 8000, size=480, dtype=np.int16)  # even count
        async with self.run(turn_detection=None) as r, r.model.session() as s:
            s.push_audio(AudioFrame.from_array(mono, 24000))
            stereo = np.stack([mono, np.zeros_like(mono)], axis=1)
            s.push_audio(AudioFrame.from_array(stereo, 24000))
            s.say("ok")
            await turn(s)
            got = np.frombuffer(bytes(r.fake.stats.audio_in), dtype="<i2")
            assert np.array_equal(got[:480], mono)  # untouched: not averaged in pairs
            assert np.array_equal(got[480:960], np.rint(mono / 2).astype(np.int16))  # real stereo

    async def test_chunked_input_is_resampled_continuously(self) -> None:
        sig = speech(0.5, 16000, freq=440.0)
        async with self.run(turn_detection=None) as r, r.model.session() as s:
            for f in sig.split(0.02):
                s.push_audio(f)
            s.commit_audio()
            await turn(s)
            got = bytes(r.fake.stats.audio_in)
        whole = StreamResampler(16000, 24000)
        expected = whole.process(sig).data + whole.flush().data
        assert got == expected  # the same samples as resampling the whole signal at once

    async def test_audio_order_is_kept_under_many_small_deltas(self) -> None:
        text = "Many tiny audio deltas must arrive in order."
        async with self.run(fake_kwargs={"chunk_ms": 1.0}) as r, r.model.session() as s:
            s.say(text)
            events = await turn(s)
            assert sum(isinstance(e, AgentAudio) for e in events) > 500
            assert audio_of(events) == tone_for_text(text, 24000)

    async def test_unknown_voice_type_is_refused(self) -> None:
        async with self.run() as r:
            with pytest.raises(ConfigError, match="type"):
                self.harness.make_model(
                    r.fake.url, deadlines=FAST, voice={"name": "x", "type": "azure-magic"}
                )
            with pytest.raises(ConfigError, match="not an OpenAI voice"):
                self.harness.make_model(r.fake.url, deadlines=FAST, voice="en-US-AvaNeural")
            with pytest.raises(ConfigError, match="endpoint_id"):
                Voice("my-voice", "azure-custom")

    async def test_interrupt_truncates_at_the_played_position(self) -> None:
        plan = FaultPlan(chunk_interval=0.01, audio_after_clear=3)
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
            s.interrupt(played=0.1)
            rest = await turn(s)
            assert not any(
                isinstance(e, AgentAudio | AgentTranscriptDelta) and e.generation <= old
                for e in rest
            )
            done = rest[-1]
            assert isinstance(done, ResponseDone) and done.status == "cancelled"
            await eventually(
                lambda: bool(self.openai_stats(r).truncates) and self.openai_stats(r).cancels > 0
            )
            assert self.openai_stats(r).cancels == 1
            assert self.openai_stats(r).truncates == [(got[0].item_id, 100)]
            s.say("Next turn.")
            nxt = await turn(s)
            assert audio_of(nxt) == tone_for_text("Next turn.", 24000)
            assert all(e.generation > old for e in nxt if isinstance(e, AgentAudio))
            assert r.fake.stats.connections == 1  # the warm connection stays

    async def test_interrupt_drops_queued_audio_at_once(self) -> None:
        async with self.run() as r, r.model.session() as s:
            s.say("An answer that is fully queued before the user interrupts it.")
            first = await anext(s)
            while not isinstance(first, AgentAudio):
                first = await anext(s)
            await asyncio.sleep(0.3)  # everything has arrived and waits in the queue
            s.interrupt()  # played: what this iterator yielded
            rest = await turn(s, lambda e: isinstance(e, ResponseDone))
            assert not [e for e in rest if isinstance(e, AgentAudio)]
            await eventually(lambda: bool(self.openai_stats(r).truncates))
            # The whole answer had arrived: nothing to cancel, but truncate what was heard.
            assert self.openai_stats(r).truncates == [
                (first.item_id, int(first.frame.duration * 1000))
            ]

    async def test_function_call_round_trip(self) -> None:
        async with self.run(tools=[WEATHER]) as r, r.model.session() as s:
            s.send_text("What is the weather in Paris?")
            events = await turn(s, lambda e: isinstance(e, FunctionCall))
            call = events[-1]
            assert isinstance(call, FunctionCall) and call.name == "get_weather"
            assert json.loads(call.arguments) == {"query": "What is the weather in Paris?"}
            await turn(s)  # the function-call response ends
            s.send_tool_result(call.call_id, '{"sky": "sunny"}')
            events = await turn(s)
            assert audio_of(events) == tone_for_text('The tool says {"sky": "sunny"}', 24000)
            outputs = [
                i
                for _, i in self.openai_stats(r).items_created
                if i.get("type") == "function_call_output"
            ]
            assert outputs == [
                {
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": '{"sky": "sunny"}',
                    "id": outputs[0]["id"],
                }
            ]

    async def test_reconnect_restores_instructions_voice_tools_and_conversation(self) -> None:
        voice = self.harness.other_voice()
        async with (
            self.run(instructions="You are terse.", tools=[WEATHER]) as r,
            r.model.session() as s,
        ):
            s.update(voice=voice)
            s.send_text("Remember the number 42.")
            await turn(s)
            r.fake.kick(1011)
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and rec.replayed_items == 2
            restored = json.dumps(r.fake.stats.sessions[-1])
            assert "You are terse." in restored and "get_weather" in restored
            assert json.dumps(Voice.wire(s.config.voice)) in restored
            await eventually(
                lambda: sum(c == 1 for c, _ in self.openai_stats(r).items_created) >= 2
            )
            replayed = [i for conn, i in self.openai_stats(r).items_created if conn == 1]
            texts = [(i["role"], i["content"][0]["text"]) for i in replayed]
            reply = r.fake.expected_reply("Remember the number 42.")
            assert texts == [("user", "Remember the number 42."), ("assistant", reply)]
            s.send_text("What was the number?")
            events = await turn(s)
            assert audio_of(events) == tone_for_text(
                r.fake.expected_reply("What was the number?"), 24000
            )
