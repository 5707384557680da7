"""Wire details shared by the context-based streaming-TTS protocols, sans I/O.

ElevenLabs (``alignment``: characters, start times, durations) and Cartesia
(``word_timestamps``: words, start times, end times) both time their audio with three
parallel JSON lists; :func:`timed_rows` checks and zips them once, so both parsers refuse
the same malformed input the same way. :func:`close_code_error` (from
:mod:`~antiphon.protocols.close_codes`, which the STT protocols share too) is the common tail
of their ``close_error`` mappings. :func:`wire_bytes_per_second` turns a raw wire
encoding into the byte rate the sessions use to keep each context's audio clock.

Kept apart from :mod:`antiphon.protocols.tts_session` (the contract between a session and
its driver): these are parsing and mapping helpers, not part of that contract.
"""

from __future__ import annotations

from typing import TypeGuard

from antiphon.protocols.close_codes import close_code_error as close_code_error

__all__ = ["close_code_error", "split_at_spaces", "timed_rows", "wire_bytes_per_second"]


def _is_real(x: object) -> TypeGuard[float]:
    """An int or float from JSON (a bool is not a number here)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def timed_rows(
    labels: object, firsts: object, seconds: object
) -> list[tuple[str, float, float]] | None:
    """Three parallel JSON lists zipped into ``(label, first, second)`` rows, values as sent.

    ``None`` unless all three are lists of one length, every label a string and every
    other value a real number.
    """
    if not (isinstance(labels, list) and isinstance(firsts, list) and isinstance(seconds, list)):
        return None
    if not len(labels) == len(firsts) == len(seconds):
        return None
    out: list[tuple[str, float, float]] = []
    for label, a, b in zip(labels, firsts, seconds, strict=True):
        if not (isinstance(label, str) and _is_real(a) and _is_real(b)):
            return None
        out.append((label, a, b))
    return out


def wire_bytes_per_second(encoding: str, sample_rate: int) -> float:
    """Bytes of one second of raw audio: 2 a sample for ``linear16``, 1 for G.711."""
    width = 2 if encoding == "linear16" else 1
    return float(width * sample_rate)


def split_at_spaces(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, each cut at the last space
    before the limit if there is one; the pieces concatenate back to ``text`` exactly."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces
