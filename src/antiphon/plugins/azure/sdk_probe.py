"""A TCP probe of the Speech endpoint: learns of a refused connection the SDK may never report.

Why: the Speech SDK (1.53) reports a refused WebSocket connection as a ``ConnectionFailure``
cancellation, except when the refusal is back before its synthesis thread has sent the
request's first message (``speech.config``): its trace then shows the ``TransportError``
handled and no cancellation, and the request waits for ever. On loopback the refusal is
immediate and this happens about once in a hundred requests on a loaded machine; a fast
network can do the same. ``Connection.open()`` reports a refused connection not at all. So
while a synthesizer connects, the plugin opens one TCP connection of its own to the
endpoint's host and port and closes it at once: if every address of the host refuses it,
the SDK's connection is refused too, and the stream fails now with what the SDK would
have said.

How it is built: :func:`endpoint_address` takes host and port from the ``ws(s)://`` URL;
:func:`refused` resolves the host (an IP address needs no lookup) and connects to each
address in turn, sending nothing (the service sees a TCP connection opened and closed, to
the host and port the SDK connects to, and to nothing else). It answers only "refused"
or "cannot tell": any other outcome is left to the SDK and the caller's connect deadline,
which also bounds the probe. Not used with a proxy (the SDK then connects to the proxy).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["endpoint_address", "refused"]


def endpoint_address(endpoint: str) -> tuple[str, int]:
    """Host and port the SDK connects to for a ``ws://`` or ``wss://`` endpoint."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    return host, parts.port or (443 if parts.scheme == "wss" else 80)


async def _addresses(host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(family, addr) for family, _, _, _, addr in infos]
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return [(family, (host, port))]


async def refused(host: str, port: int) -> str | None:
    """Why ``host:port`` refuses TCP connections, or None if it accepts one or it cannot tell.

    Refused means every address of ``host`` answered with a reset (ECONNREFUSED). A name
    that does not resolve, an unreachable network or no answer are "cannot tell" (the SDK
    reports them, or the connect deadline ends the wait). Bound it with a deadline.
    """
    try:
        addresses = await _addresses(host, port)
    except OSError:
        return None
    loop = asyncio.get_running_loop()
    refusals: list[str] = []
    for family, addr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except ConnectionRefusedError as exc:
            refusals.append(f"{addr[0]}:{addr[1]}: {exc.strerror or 'connection refused'}")
            continue
        except OSError:
            return None
        finally:
            sock.close()
        return None  # accepted: the SDK's connection is not refused
    return "; ".join(refusals) or None
