"""The carriers' official SDKs as witnesses (DESIGN rule 16): Plivo, Vonage and Telnyx.

What each SDK knows that our sans-I/O modules also claim to know:

- ``plivo`` 4.x: the V3 webhook signature (``plivo.utils.signature_v3``) and the
  ``<Stream>`` element of Plivo XML (``plivo.plivoxml``);
- ``vonage`` 4.x: the NCCO ``connect`` action with a WebSocket endpoint
  (``vonage_voice.models``, pydantic, validated) and signed webhooks (``vonage_jwt``);
- ``telnyx`` 4.x: Ed25519 webhook verification (``telnyx/lib/webhook_verification.py``,
  loaded by path: importing the package builds its whole 45 MB client, 2-10 s).

Every generated case must get the same verdict from the SDK and from us.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from plivo import plivoxml
from plivo.utils import signature_v3
from vonage_jwt import verify_jwt as vonage_jwt
from vonage_voice.models import connect_endpoints as endpoints
from vonage_voice.models import ncco

from antiphon.protocols import plivo, telnyx, vonage


def _telnyx_verification() -> ModuleType:
    spec = importlib.util.find_spec("telnyx")
    assert spec is not None and spec.origin, "the telnyx SDK is a dev dependency"
    path = Path(spec.origin).parent / "lib" / "webhook_verification.py"
    loaded = importlib.util.spec_from_file_location("telnyx_webhook_verification", path)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    sys.modules[loaded.name] = module
    loaded.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ Plivo

_name = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)
_value = st.text("abcdefghijklmnopqrstuvwxyz0123456789+-_ ", max_size=10)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/plivo/voice", "/p/v"]),
    query=st.dictionaries(_name, _value.filter(lambda v: " " not in v), max_size=3),
    form=st.dictionaries(_name, _value, max_size=4),
    nonce=st.text("0123456789abcdef", min_size=1, max_size=20),
    token=st.text("ABCDEFGHIJKLMNOP0123456789", min_size=1, max_size=20),
)
def test_plivo_v3_signature_agrees_with_the_sdk(
    method: str, path: str, query: dict[str, str], form: dict[str, str], nonce: str, token: str
) -> None:
    url = "https://a.example" + path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()))
    url = url.rstrip("?")
    fields = list(form.items()) if method == "POST" else []
    ours = plivo.compute_signature(token, method, url, nonce, fields)
    params = dict(form) if method == "POST" else {}
    assert signature_v3.validate_v3_signature(method, url, nonce, token, ours, params)
    assert plivo.validate_signature(token, method, url, nonce, ours, fields)
    other = plivo.compute_signature(token + "x", method, url, nonce, fields)
    assert not signature_v3.validate_v3_signature(method, url, nonce, token, other, params)
    assert not plivo.validate_signature(token, method, url, nonce, other, fields)


def _tree(document: str) -> list[tuple[str, dict[str, str], str]]:
    root = ET.fromstring(document.encode())
    return [(e.tag, dict(e.attrib), (e.text or "").strip()) for e in root.iter()]


@pytest.mark.parametrize("url", ["wss://a.example/plivo/media?ticket=t&x=1", "wss://b/m"])
def test_plivo_stream_xml_is_what_the_sdk_builds(url: str) -> None:
    response = plivoxml.ResponseElement()
    response.add(
        plivoxml.StreamElement(
            url,
            bidirectional=True,
            keepCallAlive=True,
            contentType="audio/x-mulaw;rate=8000",
        )
    )
    sdk = _tree(response.to_string(pretty=False))
    assert _tree(plivo.stream_xml(url)) == sdk
    assert sdk[1][2] == url  # the URL itself, escaped on the wire and read back whole


# ------------------------------------------------------------------ Vonage


@pytest.mark.parametrize("number", [None, "14155550100", "+447700900000", "Vonage"])
@pytest.mark.parametrize("headers", [None, {"lang": "en", "caller": "x"}])
def test_vonage_ncco_validates_against_the_sdk_models(
    number: str | None, headers: dict[str, str] | None
) -> None:
    (action,) = vonage.ncco_connect("wss://a.example/vonage/media?ticket=t", headers, number=number)
    fields: dict[str, Any] = {k: v for k, v in action.items() if k not in ("action", "endpoint")}
    if "from" in fields:
        fields["from_"] = fields.pop("from")
    (ep,) = action["endpoint"]
    endpoint = endpoints.WebsocketEndpoint(
        uri=ep["uri"], contentType=ep["content-type"], headers=ep.get("headers")
    )
    model = ncco.Connect(endpoint=[endpoint], **fields)  # validates (pydantic, strict types)
    assert model.model_dump(by_alias=True, exclude_none=True) == action


@settings(max_examples=100, deadline=None)
@given(
    secret=st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=32, max_size=48),
    signer=st.sampled_from(["same", "other"]),
    age=st.integers(0, 200),
)
def test_vonage_signed_webhook_verdict_agrees_with_the_sdk(
    secret: str, signer: str, age: int
) -> None:
    now = time.time()
    key = secret if signer == "same" else secret + "!"
    token = jwt.encode({"iat": int(now) - age, "jti": "j"}, key, "HS256")
    sdk = vonage_jwt.verify_signature(token, secret)
    ours = vonage.verify_jwt(secret, f"Bearer {token}", b"", now=now)
    assert ours == sdk == (signer == "same")


# ------------------------------------------------------------------ Telnyx


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=200).map(lambda b: b.hex().encode()),
    skew=st.integers(-400, 400),
    tamper=st.sampled_from(["none", "body", "timestamp", "key", "signature"]),
)
def test_telnyx_ed25519_verdict_agrees_with_the_sdk(body: bytes, skew: int, tamper: str) -> None:
    # within a second of the 300 s tolerance the verdict hangs on the clock's fraction
    # (``now`` is truncated; each side reads the clock again): not a case to compare
    assume(not 299 <= abs(skew) <= 301)
    sdk = _telnyx_verification()
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public = base64.b64encode(raw).decode()
    now = int(time.time())
    ts = str(now + skew)
    signature = base64.b64encode(private.sign(ts.encode() + b"|" + body)).decode()
    if tamper == "body":
        body += b"x"
    elif tamper == "timestamp":
        ts = str(int(ts) + 1)
    elif tamper == "key":
        other = Ed25519PrivateKey.generate().public_key()
        public = base64.b64encode(other.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    elif tamper == "signature":
        signature = base64.b64encode(bytes(64)).decode()
    headers = {sdk.SIGNATURE_HEADER: signature, sdk.TIMESTAMP_HEADER: ts}
    try:
        sdk.verify_webhook_signature(body, headers, public)
        theirs = True
    except sdk.WebhookVerificationError:
        theirs = False
    ours = telnyx.verify_signature(public, body, signature, ts, now=time.time())
    assert ours == theirs
    assert ours == (tamper == "none" and abs(skew) < 299)
