"""A TCP probe: learns whether an endpoint refuses connections, for a client that may not say.

Why: a plugin built on a vendor's native SDK connects on the SDK's own threads, and
cannot see its socket. The Azure Speech SDK (1.53) loses its report of a refused
connection about once in a few hundred requests (the refusal is back before its
synthesis thread sent the request's first message: the request then waits for ever),
and ``Connection.open()`` reports a refused connection not at all
(``antiphon.plugins.azure.sdk``). So while the SDK connects, the plugin asks here, and a
refusal fails its stream at once with what the SDK would have said.

How it is built: :func:`endpoint_address` takes host and port from a ``ws(s)://`` URL;
:func:`refused` resolves the host (an IP address needs no lookup) and connects to each
address in turn, sending nothing (the service sees a TCP connection opened and closed, to
the host and port the SDK connects to, and to nothing else). It answers only "refused"
or "cannot tell": any other outcome is left to the SDK and the caller's connect deadline,
which also bounds the probe. Kept in ``net/``, which owns every socket antiphon opens.
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
