"""antiphon: real-time voice agents whose streaming sessions always end."""

from antiphon.audio.frame import AudioFrame
from antiphon.errors import (
    AntiphonError,
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)

__all__ = [
    "AntiphonError",
    "AudioFrame",
    "AuthError",
    "ConfigError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "StreamClosedError",
]

__version__ = "0.1.0"
