"""ICE servers (STUN, TURN) for WebRTC calls across NAT: parsed once, given to both ends.

A caller behind NAT reaches the server only through addresses that a STUN server
reflected or a TURN server relays, so both peers need the same list: the server's
aiortc peer connection (:mod:`antiphon.transports.webrtc`) and the browser's
``RTCPeerConnection`` (the page reads it from ``GET /webrtc/config``).

``antiphon serve --ice-server URL`` (repeatable) takes RFC 7064/7065 URLs, with a TURN
server's username and credential as the URL's user part, percent-encoded where needed::

    stun:stun.example.com:3478
    turn:USER:CREDENTIAL@turn.example.com:3478?transport=udp
    turns:USER:CREDENTIAL@turn.example.com:5349?transport=tcp

This module has no aiortc import, so the command line parses ``--ice-server`` without
the WebRTC extra. The credential never appears in ``repr`` (nor so in a log).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from antiphon.errors import ConfigError

__all__ = ["IceServer", "browser_config"]

_SCHEMES = ("stun", "stuns", "turn", "turns")
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?")
_EXAMPLE = "stun:HOST[:PORT] or turn:USER:CREDENTIAL@HOST[:PORT][?transport=udp|tcp]"


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server: its URL (without credentials) and, for TURN, the
    username and credential."""

    url: str
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> IceServer:
        """Parse ``stun:HOST[:PORT]`` or ``turn[s]:USER:CREDENTIAL@HOST[:PORT][?transport=..]``.

        Raises:
            ConfigError: the URL is malformed, or a TURN server has no credentials.
        """
        scheme, sep, rest = text.strip().partition(":")
        scheme = scheme.lower()
        if not sep or scheme not in _SCHEMES:
            raise ConfigError(f"an ICE server is {_EXAMPLE}; got {text!r}")
        username = credential = None
        if "@" in rest:
            userinfo, rest = rest.rsplit("@", 1)
            user, colon, secret = userinfo.partition(":")
            if not (user and colon and secret):
                raise ConfigError("write a TURN server's credentials as USER:CREDENTIAL@HOST")
            username, credential = unquote(user), unquote(secret)
        address, _, query = rest.partition("?")
        if not _HOSTPORT.fullmatch(address):
            raise ConfigError(f"an ICE server is {_EXAMPLE}; got the host {address!r}")
        if query:
            if scheme.startswith("stun") or query not in ("transport=udp", "transport=tcp"):
                raise ConfigError(f"only turn: URLs take ?transport=udp|tcp; got {query!r}")
            address = f"{address}?{query}"
        if scheme.startswith("turn") and username is None:
            raise ConfigError(
                f"a TURN server needs a username and a credential: {scheme}:USER:CREDENTIAL@HOST"
            )
        if scheme.startswith("stun") and username is not None:
            raise ConfigError("a STUN server takes no credentials")
        return cls(f"{scheme}:{address}", username, credential)

    def browser(self) -> dict[str, str]:
        """This server as the browser's ``RTCIceServer`` dictionary."""
        entry = {"urls": self.url}
        if self.username is not None and self.credential is not None:
            entry.update(username=self.username, credential=self.credential)
        return entry


def browser_config(servers: Sequence[IceServer]) -> dict[str, object]:
    """The page's ``RTCPeerConnection`` configuration (``GET /webrtc/config``)."""
    return {"iceServers": [server.browser() for server in servers]}
