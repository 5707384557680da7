"""Google Cloud plugins: Text-to-Speech over REST, one request per sentence (GoogleTTS)."""

from antiphon.plugins.google.tts import GoogleTTS

__all__ = ["GoogleTTS"]
