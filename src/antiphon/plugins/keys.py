"""A hosted provider's API key: given to the plugin, else read from the environment.

A plugin takes ``api_key=...`` and falls back to the provider's environment variable (or
to a few, read in order); a key that is missing, blank or not a string is refused at
construction (DESIGN.md rule 7) with one message that says both ways to give it, and
where to get one when the plugin knows. :func:`require_api_key` is that check;
:func:`auth_hint` is what an authentication error later tells the user to check.
"""

from __future__ import annotations

import os

from antiphon.errors import ConfigError

__all__ = ["auth_hint", "require_api_key"]


def require_api_key(
    api_key: str | None, env: str, who: str, *, also: tuple[str, ...] = (), how: str = ""
) -> str:
    """The key, stripped: ``api_key``, else the first non-blank of ``$env`` and ``also``.

    Args:
        api_key: the key the plugin was given (None: read ``env``, then ``also``).
        env: the provider's environment variable, e.g. ``GLADIA_API_KEY``.
        who: the plugin as the message names it, e.g. ``Gladia STT``.
        also: further variables read, in order, when ``env`` is blank.
        how: a note the message ends with in parentheses, e.g. where to create a key.

    Raises:
        ConfigError: the key is missing, blank or not a string.
    """
    key = api_key
    if key is None:
        key = next((v for v in map(os.environ.get, (env, *also)) if v and v.strip()), "")
    if not isinstance(key, str) or not key.strip():
        note = f" ({how})" if how else ""
        raise ConfigError(
            f"{who} needs an API key: pass api_key=... or set {' or '.join((env, *also))}{note}"
        )
    return key.strip()


def auth_hint(env: str, *also: str) -> str:
    """What to check when the provider refuses the key read from ``env`` (or ``also``)."""
    return f"check {' / '.join((env, *also))} (or the api_key argument)"
