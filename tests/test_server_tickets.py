"""Media-stream tickets across processes: signed by one ``antiphon serve``, taken by another.

Behind a load balancer the carrier's webhook and its media WebSocket may reach different
processes; a ticket verifies itself with the key the processes share, expires after its
lifetime on the (injected) wall clock, and is taken once in each process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from antiphon.errors import ConfigError
from antiphon.protocols import plivo
from antiphon.server.app import create_app
from antiphon.server.edge import TICKET_TTL, TicketBook, ticket_key
from antiphon.server.telephony import CarrierSecrets
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.asgi import serve_app
from antiphon.testing.carriers import SimulatedCarrierCall
from antiphon.testing.poll import until

SHARED = "shared-ticket-secret-of-the-pods"


class Wall:
    """An injected wall clock (seconds since the epoch) that moves only when told."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_ticket_of_one_process_is_taken_by_another_with_the_same_key() -> None:
    wall = Wall()
    issuer = TicketBook(ticket_key(SHARED), wall=wall)
    other = TicketBook(ticket_key(SHARED), wall=wall)
    stranger = TicketBook(ticket_key("another-secret-of-another-site"), wall=wall)
    ticket = issuer.issue("plivo")
    assert not stranger.redeem(ticket, "plivo")  # another key: refused
    assert not other.redeem(ticket, "telnyx")  # issued for another route: refused
    assert other.redeem(ticket, "plivo")
    assert not other.redeem(ticket, "plivo")  # single use in a process


def test_a_ticket_expires_after_its_configured_lifetime() -> None:
    assert TICKET_TTL == 60.0
    wall = Wall()
    issuer = TicketBook(ticket_key(SHARED), wall=wall)
    other = TicketBook(ticket_key(SHARED), wall=wall)
    assert issuer.ttl == TICKET_TTL  # the default lifetime
    just_in_time, too_late = issuer.issue(), issuer.issue()
    wall.now += TICKET_TTL - 0.01
    assert other.redeem(just_in_time)
    wall.now += 0.01
    assert not other.redeem(too_late)
    short = TicketBook(ticket_key(SHARED), ttl=5.0, wall=wall)
    ticket = short.issue()
    wall.now += 5.0
    assert not other.redeem(ticket)  # the issuer's lifetime, carried in the ticket


@pytest.mark.parametrize(
    "forged",
    ["", "x", "1.2.3.4", "99999999999999.nonce.mac", "-1.a.b", "1" * 200],
)
def test_malformed_or_unsigned_tickets_are_refused(forged: str) -> None:
    book = TicketBook(ticket_key(SHARED), wall=Wall())
    assert not book.redeem(forged)
    genuine = book.issue()
    expires, nonce, mac = genuine.split(".")
    assert not book.redeem(f"{int(expires) + 60_000}.{nonce}.{mac}")  # a longer life: forged


def test_keys_come_from_the_ticket_secret_or_a_shared_carrier_secret() -> None:
    assert ticket_key(SHARED) == ticket_key(SHARED, "ignored")
    assert ticket_key(None, "twilio-token") == ticket_key(None, "twilio-token")
    assert ticket_key(None, "twilio-token") != ticket_key(None, "another-token")
    assert b"twilio-token" not in ticket_key(None, "twilio-token")  # derived, not the secret
    assert ticket_key(None) != ticket_key(None)  # nothing shared: random, one process only
    with pytest.raises(ConfigError, match="ANTIPHON_TICKET_SECRET"):
        CarrierSecrets(ticket_secret="short").check()


def test_the_ticket_secret_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTIPHON_TICKET_SECRET", SHARED)
    secrets = CarrierSecrets.from_env()
    assert secrets.ticket_secret == SHARED
    assert secrets.ticket_key("a twilio token") == ticket_key(SHARED)


@asynccontextmanager
async def pods(*secrets: CarrierSecrets) -> AsyncIterator[list[str]]:
    """One served app per secrets, as separate ``antiphon serve`` processes would be."""
    async with AsyncExitStack() as stack:
        hosts = []
        for s in secrets:
            agent = doubles_agent(["hello"], ["Hi."])
            app = create_app(agent, carriers=s, public_url="https://lb.example")
            hosts.append(await stack.enter_async_context(serve_app(app)))
        yield hosts


async def _plivo_ticket(host: str) -> str:
    form = {"CallUUID": "c1", "From": "+1555"}
    signature = plivo.compute_signature(
        "ptok", "POST", "https://lb.example/plivo/voice", "n1", form.items()
    )
    headers = {"X-Plivo-Signature-V3-Nonce": "n1", "X-Plivo-Signature-V3": signature}
    async with httpx.AsyncClient(base_url=f"http://{host}") as client:
        ok = await client.post("/plivo/voice", data=form, headers=headers)
    assert ok.status_code == 200, ok.text
    return ok.text.split("ticket=")[1].split("<")[0]


async def _refused(url: str) -> int | None:
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    return ws.close_code


@pytest.mark.virtual_time
@pytest.mark.parametrize("ticket_secret", [SHARED, None])  # None: derived from Plivo's token
async def test_the_stream_is_answered_by_another_process_with_the_same_key(
    ticket_secret: str | None,
) -> None:
    same = CarrierSecrets(plivo_auth_token="ptok", ticket_secret=ticket_secret)
    different = CarrierSecrets(plivo_auth_token="ptok", ticket_secret="a-different-pod-secret!")
    async with pods(same, same, different) as (webhook, media, stranger), asyncio.timeout(60):
        ticket = await _plivo_ticket(webhook)
        # a third process with another key refuses it
        assert await _refused(f"ws://{stranger}/plivo/media?ticket={ticket}") == 4401
        url = f"ws://{media}/plivo/media?ticket={ticket}"
        async with SimulatedCarrierCall("plivo", url) as call:  # another process answers
            await call.speak(speech(0.6, 8000))
            await call.speak(silence(0.6, 8000))
            await until(lambda: "turn-1" in call.heard.marks, 20)
        assert call.heard.audio
        assert await _refused(url) == 4401  # taken once in that process
