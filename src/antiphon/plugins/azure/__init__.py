"""Azure Speech plugins: :class:`AzureTTS` (REST, SSML per flush) and :class:`AzureSdkTTS`
(text streaming through the Speech SDK, ``pip install 'antiphon[azure]'``; the SDK is
imported only when a synthesizer is built), and :class:`AzureVoiceLive` (realtime
speech-to-speech)."""

from antiphon.plugins.azure.sdk import AzureSdkTTS
from antiphon.plugins.azure.tts import AzureTTS
from antiphon.plugins.azure.voicelive import AzureVoiceLive

__all__ = ["AzureSdkTTS", "AzureTTS", "AzureVoiceLive"]
