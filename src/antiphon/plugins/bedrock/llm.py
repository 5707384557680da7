"""BedrockLLM: streaming chat with any Bedrock model over ``ConverseStream``, without boto3.

The request is :mod:`antiphon.protocols.bedrock_converse`'s body, POSTed to
``/model/{modelId}/converse-stream``; the answer, an ``application/vnd.amazon.eventstream``
body, goes through :class:`~antiphon.protocols.aws_eventstream.EventStreamDecoder` (CRCs
checked, a message at most 1 MiB), each message through
:func:`~antiphon.protocols.bedrock_converse.parse_message` and the
:class:`~antiphon.protocols.bedrock_converse.ConverseStream` machine, whose actions this
stream reports. Credentials, as the AWS SDKs look for them in the environment: a Bedrock
API key (``AWS_BEARER_TOKEN_BEDROCK``, sent as ``Authorization: Bearer``), else a key pair
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) that signs every
request with SigV4. Profiles, SSO and instance roles are the SDK's: pass their resolved
keys. Why not boto3: ``docs/llm.md``. The HTTP loop (deadlines, retries before output, a
cancel closing the response) is :mod:`antiphon.services.http_llm`'s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from antiphon.errors import ConfigError, ProviderError
from antiphon.net.http import HttpOptions
from antiphon.protocols import aws_eventstream as es
from antiphon.protocols import bedrock_converse as bc
from antiphon.protocols import openai_chat as oc
from antiphon.protocols.retry import Backoff
from antiphon.services.http_llm import (
    HttpChatStream,
    HttpLLM,
    check_body_options,
    require_model,
)
from antiphon.services.llm import ChatContext, LLMDeadlines
from antiphon.services.tools import FunctionTool

__all__ = ["ENV_BEARER", "BedrockChatStream", "BedrockLLM"]

log = logging.getLogger(__name__)

PROVIDER = "bedrock"
ENV_BEARER = "AWS_BEARER_TOKEN_BEDROCK"
_AUTH_HINT = (
    f"check the credentials ({ENV_BEARER}, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) "
    "and the model's access in the Bedrock console"
)


class BedrockLLM(HttpLLM):
    """Streaming chat with a Bedrock model (see the module docstring).

    Args:
        model: A model or inference-profile id, e.g.
            ``"anthropic.claude-3-5-haiku-20241022-v1:0"`` or ``"us.amazon.nova-lite-v1:0"``.
        region: Defaults to ``$AWS_REGION``, ``$AWS_DEFAULT_REGION``, then ``us-east-1``.
        api_key: A Bedrock API key; defaults to ``$AWS_BEARER_TOKEN_BEDROCK``.
        access_key, secret_key, session_token: A key pair for SigV4 (defaults from the
            environment), used when there is no API key.
        base_url: Another endpoint (a VPC endpoint, a proxy, a local fake).
        max_tokens, temperature, top_p, stop_sequences: ``inferenceConfig``.
        tool_choice: ``"auto"``, ``"any"``, ``"none"`` or a tool's name.
        extra_body: More body fields (``additionalModelRequestFields``, ``guardrailConfig``).

    Raises:
        ConfigError: no model, no credentials, or an option out of range.
    """

    provider: ClassVar[str] = PROVIDER
    not_streaming_hint: ClassVar[str] = "is base_url a Bedrock runtime endpoint?"

    def __init__(
        self,
        model: str | None = None,
        *,
        region: str | None = None,
        api_key: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        base_url: str | None = None,
        max_tokens: int | None = bc.DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        top_p: float | None = None,
        stop_sequences: Sequence[str] | None = None,
        tool_choice: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        deadlines: LLMDeadlines | None = None,
        http: HttpOptions | None = None,
        max_retries: int = 1,
        max_retry_wait: float = 5.0,
        retry_backoff: float | Backoff = 0.25,
    ) -> None:
        model = require_model(model, "BedrockLLM", "anthropic.claude-3-5-haiku-20241022-v1:0")
        env = os.environ
        self.model = model.strip()
        self.region = (
            region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or bc.DEFAULT_REGION
        )
        self.url = bc.converse_stream_url(self.model, region=self.region, base_url=base_url)
        bearer = (api_key if api_key is not None else env.get(ENV_BEARER, "")).strip()
        self._keys: tuple[str, str, str | None] | None = None
        self.headers = {
            "content-type": "application/json",
            "accept": "application/vnd.amazon.eventstream",
        }
        if bearer:
            self.headers["authorization"] = f"Bearer {bearer}"
        else:
            ak = (access_key or env.get("AWS_ACCESS_KEY_ID", "")).strip()
            sk = (secret_key or env.get("AWS_SECRET_ACCESS_KEY", "")).strip()
            if not ak or not sk:
                raise ConfigError(
                    f"BedrockLLM needs credentials: a Bedrock API key (api_key=... or "
                    f"{ENV_BEARER}) or a key pair (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                )
            token = session_token or env.get("AWS_SESSION_TOKEN") or None
            self._keys = (ak, sk, token)
        self.options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop_sequences": stop_sequences,
            "tool_choice": tool_choice,
            "extra": dict(extra_body or {}),
        }
        check_body_options(bc.build_body, self.options)
        super().__init__(
            deadlines=deadlines,
            http=http,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            retry_backoff=retry_backoff,
        )

    @property
    def signs(self) -> bool:
        """Each request is signed with SigV4 (no API key)."""
        return self._keys is not None

    def request_headers(self, body: bytes) -> dict[str, str]:
        if self._keys is None:
            return self.headers
        access_key, secret_key, token = self._keys
        return es.sigv4_headers(
            "POST",
            self.url,
            self.headers,
            body,
            service="bedrock",
            region=self.region,
            access_key=access_key,
            secret_key=secret_key,
            session_token=token,
        )

    def body(self, context: ChatContext, tools: Sequence[FunctionTool] = ()) -> dict[str, Any]:
        """The JSON request body for ``context`` and ``tools``."""
        return bc.build_body(context.messages, tools, **self.options)

    def encode(self, context: ChatContext, tools: tuple[FunctionTool, ...]) -> bytes:
        return oc.encode_body(self.body(context, tools))

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return bc.http_error(status, headers, body, provider=self.provider, auth_hint=_AUTH_HINT)


class BedrockChatStream(HttpChatStream):
    """One streamed answer: event-stream messages through the ``ConverseStream`` machine,
    complete at ``metadata`` (or at the body's end after ``messageStop``)."""

    end_marker = "messageStop"

    def _begin(self) -> None:
        self._decoder = es.EventStreamDecoder()
        self._machine = bc.ConverseStream()

    def _feed(self, chunk: bytes) -> bool:
        return self._report(self._decoder.feed, chunk)

    def _end(self) -> bool:
        if self._decoder.pending:
            return False  # cut inside a message
        return self._machine.stopped

    def _report(self, feed: Callable[[bytes], list[es.EventMessage]], chunk: bytes) -> bool:
        """Parse ``chunk`` and report its actions; True at the end of the answer."""
        try:
            for message in feed(chunk):
                for action in self._machine.feed(bc.parse_message(message)):
                    if self._report_action(action):
                        return True
        except (es.EventStreamError, bc.Malformed) as exc:
            raise ProviderError(
                f"malformed stream: {exc}",
                provider=self.provider,
                stage="receive",
                hint="the server does not speak Bedrock's ConverseStream",
            ) from None
        except bc.StreamErrorEvent as exc:
            raise ProviderError(
                f"error in the stream: {exc.type}: {exc.message}",
                provider=self.provider,
                stage="stream",
                code=exc.type,
                retryable=exc.type in bc.RETRYABLE_EXCEPTIONS,
            ) from None
        return False


BedrockLLM.stream_class = BedrockChatStream
