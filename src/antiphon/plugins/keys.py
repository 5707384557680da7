"""A hosted provider's API key: given to the plugin, else read from the environment.

A plugin takes ``api_key=...`` and falls back to the provider's environment variable; a
key that is missing or blank is refused at construction (DESIGN.md rule 7) with one
message that says both ways to give it. :func:`require_api_key` is that check;
:func:`auth_hint` is what an authentication error later tells the user to check.
"""

from __future__ import annotations

import os

from antiphon.errors import ConfigError

__all__ = ["auth_hint", "require_api_key"]


def require_api_key(api_key: str | None, env: str, who: str) -> str:
    """The key, stripped: ``api_key``, else ``$env``.

    Args:
        api_key: the key the plugin was given (None: read ``env``).
        env: the provider's environment variable, e.g. ``GLADIA_API_KEY``.
        who: the plugin as the message names it, e.g. ``Gladia STT``.

    Raises:
        ConfigError: the key is missing, blank or not a string.
    """
    key = api_key if api_key is not None else os.environ.get(env, "")
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"{who} needs an API key: pass api_key=... or set {env}")
    return key.strip()


def auth_hint(env: str) -> str:
    """What to check when the provider refuses the key read from ``env``."""
    return f"check {env} (or the api_key argument)"
