"""Services: the streaming contracts (TTS, ...) that provider plugins implement."""

__all__ = []
