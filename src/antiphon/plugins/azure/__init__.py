"""Azure Speech plugins: :class:`AzureTTS` (REST, SSML per flush) and :class:`AzureSdkTTS`
(text streaming through the Speech SDK, ``pip install 'antiphon[azure]'``; the SDK is
imported only when a synthesizer is built)."""

from antiphon.plugins.azure.sdk import AzureSdkTTS
from antiphon.plugins.azure.tts import AzureTTS

__all__ = ["AzureSdkTTS", "AzureTTS"]
