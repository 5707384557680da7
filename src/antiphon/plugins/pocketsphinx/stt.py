"""PocketSphinx 5 streaming STT: US English acoustic model, dictionary and 3-gram language
model all ship inside the ``pocketsphinx`` wheel (``pocketsphinx/model/en-us``), so it
runs with no key, no network and no download.

It is small and fast (real-time factor well under 1 on one core, see docs/offline.md)
but far less accurate than modern neural models, especially on synthetic voices; pass
``words=`` (a closed vocabulary) or your own ``lm``/``dictionary`` to make it dependable for a
narrow domain. The decoder is blocking native code that holds the GIL while it decodes
(two decoders on two threads take three times as long as one: no parallelism, only
contention), so :class:`InProcessSTT` leases a decoder per utterance from a small
bounded pool (``max_engines``), each on a worker thread of its own, and the agent feeds
it only speech (``speech_only``): it costs about 0.11 s of CPU per second of silence and
0.3 s per second of speech.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, ClassVar

from antiphon.errors import ConfigError
from antiphon.services.stt import (
    ChildProcessRecognizer,
    Hypothesis,
    InProcessSTT,
    Recognizer,
    STTDeadlines,
)

__all__ = [
    "FRAME_RATE",
    "INSTALL_HINT",
    "PROVIDER",
    "SAMPLE_RATE",
    "PocketsphinxRecognizer",
    "PocketsphinxSTT",
]

PROVIDER = "pocketsphinx"
INSTALL_HINT = "install PocketSphinx and its English model with: pip install pocketsphinx"
SAMPLE_RATE = 16000
FRAME_RATE = 100  # the decoder's frames per second (``-frate``)
_PIECE = 2 * SAMPLE_RATE // FRAME_RATE  # bytes of one decoder frame (10 ms)
_FILLERS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")


def _module() -> Any:
    try:
        import pocketsphinx  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError(f"pocketsphinx is not installed; {INSTALL_HINT}") from exc
    return pocketsphinx


class PocketsphinxRecognizer:
    """A :class:`~antiphon.services.stt.Recognizer` over one ``pocketsphinx.Decoder``.

    ``words``: restrict recognition to these words (each must be in the dictionary);
    ``lm`` / ``dictionary``: paths of another language model / pronunciation dictionary.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        *,
        words: Iterable[str] | None = None,
        lm: str | None = None,
        dictionary: str | None = None,
    ) -> None:
        ps = _module()
        kwargs: dict[str, Any] = {"loglevel": "FATAL"}
        if lm is not None:
            kwargs["lm"] = lm
        if dictionary is not None:
            kwargs["dict"] = dictionary
        self._decoder = ps.Decoder(**kwargs)
        if words is not None:
            self._restrict(list(words))
        self._in_utt = False

    def _restrict(self, words: list[str]) -> None:
        vocab = sorted({w.lower() for w in words if w.strip()})
        missing = [w for w in vocab if self._decoder.lookup_word(w) is None]
        if missing or not vocab:
            raise ConfigError(
                f"words not in the PocketSphinx dictionary: {', '.join(missing) or '(none given)'}"
            )
        alternatives = " | ".join(vocab)
        grammar = f"#JSGF V1.0;\ngrammar words;\npublic <any> = ( {alternatives} )+ ;\n"
        self._decoder.add_jsgf_string("words", grammar)
        self._decoder.activate_search("words")

    def start(self) -> None:
        if self._in_utt:
            self._decoder.end_utt()
        self._decoder.start_utt()
        self._in_utt = True

    def process(self, pcm: bytes) -> None:
        # in 10 ms pieces: the decoder holds the GIL for the length of a call, and the
        # event loop of a busy server waits that long each time it gives the GIL up
        for i in range(0, len(pcm), _PIECE):
            self._decoder.process_raw(pcm[i : i + _PIECE], False, False)

    def _hypothesis(self, final: bool) -> Hypothesis | None:
        words = [s for s in self._decoder.seg() if not _FILLERS.match(s.word)]
        if not words:
            return None
        text = " ".join(re.sub(r"\(\d+\)$", "", s.word) for s in words)
        confidence = sum(float(s.prob) for s in words) / len(words) if final else 0.0
        return Hypothesis(
            text,
            words[0].start_frame / FRAME_RATE,
            (words[-1].end_frame + 1) / FRAME_RATE,
            min(1.0, max(0.0, confidence)),
        )

    def process_many(self, chunks: list[bytes]) -> None:
        for pcm in chunks:
            self.process(pcm)

    def partial(self) -> Hypothesis | None:
        return self._hypothesis(False) if self._in_utt else None

    def finish(self) -> Hypothesis | None:
        if not self._in_utt:
            return None
        self._decoder.end_utt()
        self._in_utt = False
        return self._hypothesis(True)

    def close(self) -> None:
        if self._in_utt:
            self._decoder.end_utt()
            self._in_utt = False
        self._decoder = None


def _check_vocabulary(words: list[str], dictionary: str | None) -> None:
    """Refuse words the pronunciation dictionary lacks (before any engine is built)."""
    path = dictionary or os.path.join(
        os.path.dirname(_module().__file__), "model", "en-us", "cmudict-en-us.dict"
    )
    known: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            head = line.split(maxsplit=1)
            if head:
                known.add(re.sub(r"\(\d+\)$", "", head[0]).lower())
    vocab = {w.lower() for w in words if w.strip()}
    missing = sorted(vocab - known)
    if missing or not vocab:
        raise ConfigError(
            "words not in the PocketSphinx dictionary: "
            f"{', '.join(missing) or '(none given)'}; pick other words or pass dictionary="
        )


class PocketsphinxSTT(InProcessSTT):
    """Offline streaming STT with PocketSphinx's US English model (16 kHz).

    Audio of any rate is converted; ``flush()`` ends an utterance (give it VAD ends).
    See :class:`PocketsphinxRecognizer` for ``words``, ``lm`` and ``dictionary``.
    ``child_process=True``: each engine decodes in a child process of its own (on
    another core, without the server's GIL: what a server with several calls wants).
    """

    provider: ClassVar[str] = PROVIDER
    engine_rate: ClassVar[int | None] = SAMPLE_RATE

    def __init__(
        self,
        *,
        words: Iterable[str] | None = None,
        lm: str | None = None,
        dictionary: str | None = None,
        deadlines: STTDeadlines | None = None,
        interim_interval: float = 0.3,
        max_idle: int = 2,
        max_engines: int | None = None,
        child_process: bool = False,
    ) -> None:
        _module()  # refuse at once if it is missing
        for name, path in (("lm", lm), ("dictionary", dictionary)):
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"PocketSphinx {name} file {path!r} does not exist")
        self._words = list(words) if words is not None else None
        if self._words is not None:
            _check_vocabulary(self._words, dictionary)
        self._lm, self._dict = lm, dictionary
        self.child_process = child_process
        super().__init__(
            deadlines=deadlines,
            interim_interval=interim_interval,
            max_idle=max_idle,
            max_engines=max_engines,
        )

    def make_recognizer(self) -> Recognizer:
        kwargs: dict[str, Any] = {"words": self._words, "lm": self._lm, "dictionary": self._dict}
        if self.child_process:
            return ChildProcessRecognizer(PocketsphinxRecognizer, **kwargs)
        return PocketsphinxRecognizer(**kwargs)
