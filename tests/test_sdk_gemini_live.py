"""The ``google-genai`` SDK as witness of the Gemini Live fake and plugin.

The realtime conformance suite (with the Gemini overrides of ``test_gemini_live``) runs with
every frame recorded: each one the fake sends must validate as the SDK's
``types.LiveServerMessage``, each one the plugin sends as ``types.LiveClientMessage``
(both pydantic models with ``extra="forbid"``, so an unknown field fails). One gap: the
SDK's own connect sends ``setup.realtimeInputConfig`` (``_live_converters``:
``['setup', 'realtimeInputConfig']``) although its ``LiveClientSetup`` model lacks the
field, so that part is checked against ``types.RealtimeInputConfig`` instead.

Then the SDK's own live client (``client.aio.live.connect``) runs a turn against the fake.
The SDK always connects with ``wss://`` when it has an API key, so the fake is reached
through a loopback TLS proxy with a throwaway self-signed certificate (``cryptography``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types

from antiphon.testing.gemini_live import DEFAULT_API_KEY, FakeGeminiLiveServer
from antiphon.testing.server import serving
from antiphon.testing.synth import tone_for_text
from sdk_witness import Wire, wire
from test_gemini_live import TestGeminiLiveConformance as _GeminiConformance

__all__ = ["wire"]

SDK_VERSION = version("google-genai")
GARBAGE = ("{this is not json", "somethingNew")


def deliberate(text: str) -> bool:
    return any(g in text for g in GARBAGE)


def client_errors(msg: Any) -> list[str]:
    if not isinstance(msg, dict) or len(msg) != 1:
        return [f"a client message has exactly one field, got {msg!r:.120}"]
    msg = json.loads(json.dumps(msg))
    gap = msg.get("setup", {}).pop("realtimeInputConfig", None)
    errs = []
    try:
        types.LiveClientMessage.model_validate(msg)
        if gap is not None:
            types.RealtimeInputConfig.model_validate(gap)
    except ValueError as exc:
        errs.append(str(exc))
    return errs


def server_errors(msg: Any) -> list[str]:
    try:
        types.LiveServerMessage.model_validate(msg)
    except ValueError as exc:
        return [str(exc)]
    return []


def check_gemini_wire(w: Wire) -> None:
    bad = []
    for who, check in (("client", client_errors), ("server", server_errors)):
        for msg in w.messages(who, skip=deliberate):
            bad += [f"{who}: {json.dumps(msg)[:200]}: {e}" for e in check(msg)]
    assert not bad, f"google-genai {SDK_VERSION} rejects:\n" + "\n".join(bad)


class TestGeminiLiveConformanceUnderWitness(_GeminiConformance):
    """Every scenario of the suite (healthy and faulty), its wire checked by the SDK."""

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_gemini_wire(wire)


def test_the_witness_refuses_what_is_not_gemini() -> None:
    """The check fails an unknown field, a camel-case slip and two fields in one message."""
    assert server_errors({"serverContent": {"turnComplete": True, "done": True}})
    assert server_errors({"setupComplete": {}, "unknown": 1})
    assert client_errors({"clientContent": {"turnComplete": True}, "setup": {}})
    assert client_errors({"realtimeInput": {"audio": {"data": "AAA=", "mime": "x"}}})
    assert not client_errors({"realtimeInput": {"activityEnd": {}}})


# --------------------------------------------------------------------------- the SDK's client


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts of a throwaway self-signed certificate for 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key_obj = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key_obj.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key_obj, hashes.SHA256())
    )
    d: Path = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        key_obj.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@contextlib.asynccontextmanager
async def tls_proxy(ctx: ssl.SSLContext, port: int) -> AsyncIterator[int]:
    """Terminate TLS on a loopback port and pipe the bytes to ``port``; owns its tasks."""
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def handle(r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        both = [asyncio.create_task(pipe(r1, w2)), asyncio.create_task(pipe(r2, w1))]
        tasks.update(both)
        await asyncio.gather(*both)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def test_the_sdk_client_runs_a_turn_against_the_fake(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], wire: Wire
) -> None:
    fake = FakeGeminiLiveServer()
    async with serving(fake), tls_proxy(tls[0], fake.port) as port:
        client = genai.Client(
            api_key=DEFAULT_API_KEY,
            http_options=types.HttpOptions(
                base_url=f"https://127.0.0.1:{port}",
                api_version="v1beta",  # the default endpoint's; a custom base_url means v1
                async_client_args={"ssl": tls[1]},
            ),
        )
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.AUDIO],
            system_instruction="Be brief.",
            output_audio_transcription=types.AudioTranscriptionConfig(),
        )
        audio = bytearray()
        said = []
        async with asyncio.timeout(20):
            async with client.aio.live.connect(model="gemini-live-test", config=config) as s:
                await s.send_client_content(
                    turns=types.Content(role="user", parts=[types.Part(text="Hi there")]),
                    turn_complete=True,
                )
                async for msg in s.receive():
                    sc = msg.server_content
                    if msg.data:
                        audio += msg.data
                    if sc and sc.output_transcription and sc.output_transcription.text:
                        said.append(sc.output_transcription.text)
                    if sc and sc.turn_complete:
                        break
        assert bytes(audio) == tone_for_text(fake.expected_reply("Hi there"), 24000)
        assert "".join(said) == fake.expected_reply("Hi there")
        setup = fake.stats.sessions[0]
        assert setup["model"] == "models/gemini-live-test"
        assert "Be brief." in json.dumps(setup)
    check_gemini_wire(wire)  # the SDK's own messages pass the same check
