"""Azure Speech plugins: :class:`AzureTTS` (REST, SSML per flush) and :class:`AzureSdkTTS`
(text streaming through the Speech SDK, ``pip install 'antiphon[azure]'``; the SDK is
imported only when a synthesizer is built), :class:`AzureSTT` (recognition through the
Speech SDK, imported only when a stream starts), and :class:`AzureVoiceLive` (realtime
speech-to-speech)."""

from antiphon.plugins.azure.sdk import AzureSdkTTS
from antiphon.plugins.azure.stt import AzureSTT
from antiphon.plugins.azure.tts import AzureTTS
from antiphon.plugins.azure.voicelive import AzureVoiceLive

__all__ = ["AzureSTT", "AzureSdkTTS", "AzureTTS", "AzureVoiceLive"]
