"""WebRTC's VAD (``webrtcvad-wheels``): a light, model-free speech/silence classifier."""

from antiphon.plugins.webrtc.vad import WebRtcVAD

__all__ = ["WebRtcVAD"]
