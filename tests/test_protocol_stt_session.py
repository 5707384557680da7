"""What the streaming-STT protocol machines share: the audio chunker, the session skeleton
(driven through every order of audio, flushes and answers by hypothesis), close codes, JSON
numbers and the handshake URL."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.audio.codecs import encode_pcm
from antiphon.errors import (
    AuthError,
    ConfigError,
    ProtocolStateError,
    ProviderConnectionError,
    ProviderError,
)
from antiphon.protocols.close_codes import closed_error, reported_error
from antiphon.protocols.stt_session import (
    SEND_CHUNK_SECONDS,
    TIME_TOLERANCE,
    AudioChunker,
    Message,
    Phase,
    RecognitionSession,
    json_number,
    ws_url,
)


def test_push_cuts_whole_messages_and_keeps_the_rest() -> None:
    chunker = AudioChunker(sample_rate=16000, width=2)
    step = round(SEND_CHUNK_SECONDS * 16000) * 2
    assert chunker.step == step
    pcm = bytes(range(256)) * 30  # 7680 bytes: 4 whole messages and 1280 bytes over
    chunks = chunker.push(pcm)
    assert [len(c) for c in chunks] == [step] * (len(pcm) // step)
    assert b"".join(chunks) == pcm[: len(pcm) - len(chunker)]
    assert len(chunker) == len(pcm) % step
    (tail,) = chunker.tail()
    assert b"".join(chunks) + tail == pcm  # nothing lost, nothing reordered
    assert chunker.tail() == [] and len(chunker) == 0


def test_mulaw_is_encoded_and_padded_with_its_silence() -> None:
    chunker = AudioChunker(sample_rate=8000, width=1)
    pcm = b"\x10\x00" * 100
    assert chunker.push(pcm) == []  # 100 samples < 400 per message
    (tail,) = chunker.tail(min_bytes=400)
    assert tail == encode_pcm("mulaw", pcm) + b"\xff" * 300


def test_int16_tail_padding_is_zero_samples() -> None:
    chunker = AudioChunker(sample_rate=16000, width=2)
    chunker.push(b"\x01\x02" * 10)
    assert chunker.tail(min_bytes=40) == [b"\x01\x02" * 10 + b"\x00\x00" * 10]
    chunker.push(b"\x01\x02" * 30)
    assert chunker.tail(min_bytes=40) == [b"\x01\x02" * 30]  # long enough: no padding


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="whole samples"):
        AudioChunker(sample_rate=16000, width=2).push(b"\x00\x00\x00")
    with pytest.raises(ConfigError, match="1 \\(mu-law\\) or 2"):
        AudioChunker(sample_rate=16000, width=3)


# --------------------------------------------------------------------------- the session skeleton

RATE = 8000  # int16 mono: 16000 bytes a second, 800 bytes a 50 ms message
FLUSH = "flush"
END = "end"


class ToySession(RecognitionSession):
    """The smallest protocol on the skeleton: a flush is a mark, answered by ``"ok"``."""

    def __init__(self, journal_seconds: float = 30.0, *, cut: bool = True) -> None:
        super().__init__(sample_rate=RATE, width=2, journal_seconds=journal_seconds, cut=cut)
        self.marks: list[float] = []
        self.forgotten = 0

    def _owes_answer(self) -> bool:
        return bool(self.marks)

    def _owed_requests(self) -> list[Message]:
        return [*([FLUSH] if self.marks else []), *([END] if self.phase is Phase.CLOSING else [])]

    def _reconnected(self, replayed: list[Message]) -> None:
        self.forgotten += 1

    def _wire(self, chunk: bytes) -> Message:
        return chunk[::-1]  # a protocol's own wrapping, to see that replay uses it

    def flush(self) -> list[Message]:
        self._require_open("flush")
        msgs = self._tail()
        self.marks.append(self.sent)
        return [*msgs, FLUSH]

    def end(self) -> list[Message]:
        self._require_open("end")
        self.phase = Phase.CLOSING
        return [*self._tail(), END]

    def answer(self, until: float) -> None:
        self._finalize_to(until)
        if self.marks and self.marks[0] <= self.finalized + TIME_TOLERANCE:
            self.marks.pop(0)


def _pcm(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))  # no palindrome: a reversed chunk shows


def _audio_of(msgs: list[Message]) -> bytes:
    return b"".join(m[::-1] for m in msgs if isinstance(m, bytes))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("audio"), st.integers(0, 3000).map(lambda n: n * 2)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("answer"), st.integers(0, 400)),  # hundredths of a second
    ),
    max_size=40,
)


@given(ops, st.booleans())
def test_every_sample_goes_out_once_in_order_and_the_clock_counts_it(
    steps: list[tuple[str, int]], end: bool
) -> None:
    s = ToySession()
    pushed, out = bytearray(), []
    for op, n in steps:
        if op == "audio":
            pcm = _pcm(n)
            pushed += pcm
            out += s.audio(pcm)
        elif op == "flush":
            out += s.flush()
        else:
            s.answer(n / 100)
    if end:
        out += s.end()
        assert out[-1] == END and s.phase is Phase.CLOSING
    wire = _audio_of(out)
    assert wire == bytes(pushed)[: len(wire)]  # nothing lost, nothing reordered
    assert len(pushed) - len(wire) < s._chunks().step  # at most one message held back
    if end or (steps and steps[-1][0] == "flush"):
        assert wire == bytes(pushed)
    assert math.isclose(s.sent, len(wire) / (2 * RATE))
    assert s.unfinalized == max(0.0, s.sent - s.finalized)


@given(ops)
def test_the_journal_is_the_audio_no_answer_covered(steps: list[tuple[str, int]]) -> None:
    s = ToySession()
    sent, finalized, covered = bytearray(), 0.0, 0.0
    for op, n in steps:
        if op == "audio":
            sent += _audio_of(s.audio(bytes(n)))
        elif op == "flush":
            sent += _audio_of(s.flush())
        else:
            s.answer(n / 100)
            finalized = max(finalized, n / 100)
            covered = max(covered, min(finalized, s.sent))  # what was sent by then
            assert s.finalized == finalized  # monotone: an older answer takes nothing back
    kept = b"".join(s.journal)
    assert bytes(sent).endswith(kept)
    if not kept:
        assert covered >= s.sent - 1e-9
        return
    assert s.journal.start is not None
    assert math.isclose(s.journal.start, (len(sent) - len(kept)) / (2 * RATE), abs_tol=1e-9)
    # cut to the sample at what answers covered: no more, no less
    assert covered - 1 / RATE - 1e-9 <= s.journal.start <= covered + 1 / RATE + 1e-9


@given(ops, st.sampled_from([0.0, 0.05, 30.0]), st.booleans())
def test_replay_is_the_journal_then_what_is_owed(
    steps: list[tuple[str, int]], journal_seconds: float, end: bool
) -> None:
    s = ToySession(journal_seconds)
    for op, n in steps:
        if op == "audio":
            s.audio(_pcm(n))
        elif op == "flush":
            s.flush()
        else:
            s.answer(n / 100)
    if end:
        s.end()
    msgs = s.replay()
    if s.journal.overflowed:
        assert msgs is None
        with pytest.raises(ProtocolStateError, match="audio was lost"):
            s.begin_replay()
        assert s.connections == 1 and s.forgotten == 0
        return
    assert msgs is not None
    owed = [*([FLUSH] if s.marks else []), *([END] if end else [])]
    assert msgs == [c[::-1] for c in s.journal] + owed
    expected_offset = s.journal.start if s.journal.start is not None else s.sent
    assert s.begin_replay() == msgs
    assert s.offset == expected_offset
    assert s.connections == 2 and s.forgotten == 1


def test_phases_refuse_what_they_forbid_and_say_why() -> None:
    s = ToySession()
    assert not s.done and not s.awaiting and not s.lost_is_harmless()
    s.audio(bytes(1600))
    assert s.keepalive() == []
    s.flush()
    assert s.awaiting  # the flush is owed its answer
    s.end()
    assert s.awaiting  # and the end its own
    for call in (lambda: s.audio(b"\x00\x00"), s.flush, s.end):
        with pytest.raises(ProtocolStateError, match="in phase closing"):
            call()
    assert not s.lost_is_harmless()  # the flush is still owed
    s.answer(s.sent)
    assert s.awaiting and s.lost_is_harmless()  # only the end is owed: a drop loses nothing
    s.phase = Phase.DONE
    assert s.done and not s.awaiting and s.replay() is None
    with pytest.raises(ProtocolStateError, match="in phase done"):
        s.audio(b"")
    assert issubclass(ProtocolStateError, RuntimeError)


def test_a_session_that_splits_its_own_audio_has_no_chunker() -> None:
    class Unchunked(ToySession):
        def __init__(self) -> None:
            RecognitionSession.__init__(
                self, sample_rate=RATE, width=2, journal_seconds=1.0, chunked=False
            )
            self.marks = []

    with pytest.raises(NotImplementedError, match="splits its audio itself"):
        Unchunked().audio(b"\x00\x00")


def test_whole_message_journal_keeps_a_message_the_answer_only_cut() -> None:
    s = ToySession(cut=False)
    s.audio(bytes(1600))  # two 50 ms messages
    s.answer(0.075)  # half-way through the second
    assert [len(c) for c in s.journal] == [800] and s.journal.start == 0.05


# --------------------------------------------------------------------------- close codes


@pytest.mark.parametrize(
    ("code", "reason", "kind", "text", "retryable", "hint"),
    [
        (1008, "", AuthError, "Unauthorized", False, "check KEY"),
        (4001, "denied", AuthError, "denied", False, "check KEY"),
        (None, "", ProviderConnectionError, "no reason given", True, "check the network"),
        (1011, "boom", ProviderConnectionError, "boom", True, "internal"),
        (4000, "", ProviderConnectionError, "no reason given", False, "check the network"),
    ],
)
def test_closed_error_reads_the_providers_table(
    code: int | None, reason: str, kind: type, text: str, retryable: bool, hint: str
) -> None:
    err = closed_error(
        code,
        reason,
        provider="toy",
        stage="receive",
        auth_codes=(1008, 4001),
        auth_hint="check KEY",
        hints={1011: "internal"},
        reasons={1008: "Unauthorized"},
    )
    assert type(err) is kind
    assert f"toy receive: the server closed the connection: {text}" in str(err)
    assert err.provider == "toy" and err.stage == "receive"
    assert err.code == (1006 if code is None else code)
    assert err.retryable is retryable and hint in (err.hint or "")


# --------------------------------------------------------------------------- frames and URLs


def test_json_number_takes_numbers_only() -> None:
    assert json_number(3) == 3.0 and isinstance(json_number(3), float)
    assert json_number(-0.5) == -0.5
    for value in (True, False, None, "1", [1], {"a": 1}):
        assert json_number(value) is None


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("wss://api.example.com", "wss://api.example.com/v1/listen?a=1&k=x+y"),
        ("ws://127.0.0.1:9/", "ws://127.0.0.1:9/v1/listen?a=1&k=x+y"),
        (" wss://h/v1/listen/ ", "wss://h/v1/listen?a=1&k=x+y"),  # the path once
        ("wss://h/proxy", "wss://h/proxy/v1/listen?a=1&k=x+y"),
    ],
)
def test_ws_url_puts_the_path_once_and_encodes_the_query(base: str, url: str) -> None:
    assert ws_url(base, "/v1/listen", {"a": "1", "k": "x y"}, example="wss://e") == url
    assert ws_url(base, "/v1/listen", [("a", "1"), ("k", "x y")], example="wss://e") == url


@pytest.mark.parametrize("base", ["https://api.example.com", "wss://", "api.example.com"])
def test_ws_url_refuses_what_is_no_websocket_url(base: str) -> None:
    with pytest.raises(ConfigError, match=r"such as 'wss://e' or 'ws://127\.0\.0\.1:PORT'"):
        ws_url(base, "/p", {}, example="wss://e")


@pytest.mark.parametrize(
    ("kind", "error", "retryable", "hint"),
    [
        ("auth_error", AuthError, False, "check KEY"),
        ("overloaded", ProviderConnectionError, True, "retry"),
        ("bad_request", ProviderError, False, "read the message"),
    ],
)
def test_reported_error_is_typed_by_the_message_type(
    kind: str, error: type, retryable: bool, hint: str
) -> None:
    err = reported_error(
        f"the server reported {kind}",
        kind,
        provider="toy",
        stage="receive",
        auth_kinds={"auth_error"},
        auth_hint="check KEY",
        retry_kinds={"overloaded"},
        retry_hint="retry",
        hint="read the message",
    )
    assert type(err) is error and f"the server reported {kind}" in str(err)
    assert err.retryable is retryable and err.hint == hint and err.code is None
