"""WebRTC VAD (``webrtcvad-wheels``, a ~100 kB C extension, no model file).

It classifies each 30 ms window of 16 kHz audio as speech or not (probability 1 or 0),
with an ``aggressiveness`` from 0 (keeps most audio as speech) to 3 (strictest). It is
fast but easily fooled by tones and music; prefer Silero when it matters.

WebRTC's classifier keeps saying "speech" for a few windows after speech stops (its
"overhang", ``kOverHangMax2`` in ``vad_core.c``: 5 windows in modes 0-1, 3 in modes 2-3 at
30 ms), so its speech ends come up to :attr:`WebRtcVAD.hangover` seconds late.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.errors import ConfigError
from antiphon.services.vad import VAD, VADOptions

__all__ = ["INSTALL_HINT", "WebRtcVAD"]

INSTALL_HINT = "install WebRTC's VAD with: pip install webrtcvad-wheels"


class WebRtcVAD(VAD):
    """WebRTC VAD at 16 kHz, 30 ms windows."""

    name = "webrtc"
    sample_rate: ClassVar[int] = 16000
    window: ClassVar[int] = 480

    def __init__(self, options: VADOptions | None = None, *, aggressiveness: int = 2) -> None:
        if (
            not isinstance(aggressiveness, int)
            or isinstance(aggressiveness, bool)
            or aggressiveness not in (0, 1, 2, 3)
        ):
            raise ConfigError(
                "WebRTC VAD aggressiveness must be 0-3 (an int; 3 is the strictest), "
                f"got {aggressiveness!r}"
            )
        super().__init__(options)
        try:
            import webrtcvad  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ConfigError(f"webrtcvad is not installed; {INSTALL_HINT}") from exc
        self.aggressiveness = aggressiveness
        self._model: Any = webrtcvad.Vad(aggressiveness)

    @property
    def hangover(self) -> float:
        """The longest the classifier's own overhang delays the end of speech, in seconds."""
        return (5 if self.aggressiveness < 2 else 3) * self.window / self.sample_rate

    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        return 1.0 if self._model.is_speech(window.tobytes(), self.sample_rate) else 0.0
