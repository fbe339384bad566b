"""Who writes a draft: an LLM through the `openai` SDK (OpenAI, Azure OpenAI, or any server that
speaks its API: vLLM, llama.cpp, Ollama), or the local provider, which needs no network and no
download: it picks the creator's own reply that best fits and adapts it."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Protocol

import httpx2
import openai
import orjson

from huntaze_ai_agent.checks import normalise
from huntaze_ai_agent.config import AiAgentSettings
from huntaze_ai_agent.prompts import DraftRequest, Prompt

LOCAL_PROVIDER = "local"
LOCAL_MODEL = "best-match-v1"


@dataclass(frozen=True)
class Completion:
    """A draft and what it cost."""

    text: str
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0
    latency_ms: int = 0


class ProviderError(Exception):
    """The provider gave no draft after its retries (down, timing out, rate limited, refusing)."""


class Provider(Protocol):
    name: str
    model: str

    async def complete(self, request: DraftRequest, prompt: Prompt) -> Completion: ...


@dataclass(frozen=True)
class Pricing:
    input_usd_per_million: float
    output_usd_per_million: float

    def cost_micros(self, input_tokens: int, output_tokens: int) -> int:
        # USD per million tokens is exactly micro-dollars per token.
        return round(
            input_tokens * self.input_usd_per_million + output_tokens * self.output_usd_per_million
        )


class OpenAIProvider:
    """Chat completions through an `openai` SDK client, which retries connection errors, 408,
    409, 429 and 5xx with exponential backoff (honouring `Retry-After`) and times requests out.

    The request goes through the client's plain `post` and the answer is read as JSON: the
    SDK's typed `chat.completions.create` spends more CPU on transforming its parameters and
    building its response models than the request itself takes, for the three fields read here.
    """

    def __init__(
        self,
        *,
        client: openai.AsyncOpenAI,
        name: str,
        model: str,
        pricing: Pricing,
        max_output_tokens: int,
    ) -> None:
        self._client = client
        self.name = name
        self.model = model
        self._pricing = pricing
        self._max_output_tokens = max_output_tokens

    async def complete(self, request: DraftRequest, prompt: Prompt) -> Completion:
        started = time.perf_counter()
        try:
            response = await self._client.post(
                "/chat/completions",
                body={
                    "model": self.model,
                    "messages": prompt.messages,
                    "max_tokens": self._max_output_tokens,
                    "temperature": 0.7,
                },
                cast_to=httpx2.Response,
            )
        except openai.OpenAIError as error:
            raise ProviderError(f"{self.name}: {type(error).__name__}: {error}") from error
        latency_ms = round((time.perf_counter() - started) * 1000)
        try:
            answer = orjson.loads(response.content)
            choices = answer.get("choices") or []
            if not choices:
                raise ProviderError(f"{self.name}: the response has no choices")
            text = (choices[0].get("message") or {}).get("content") or ""
            usage = answer.get("usage") or {}
            input_tokens = int(usage.get("prompt_tokens") or 0)
            output_tokens = int(usage.get("completion_tokens") or 0)
            model = answer.get("model") or self.model
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as error:
            raise ProviderError(f"{self.name}: the response is not a chat completion") from error
        return Completion(
            text=str(text).strip(),
            provider=self.name,
            model=str(model),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_micros=self._pricing.cost_micros(input_tokens, output_tokens),
            latency_ms=latency_ms,
        )

    async def close(self) -> None:
        await self._client.close()


_WORDS = re.compile(r"\w+")
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\ufe0f\u200d]+")
_NAME = re.compile(r"\{name\}")
# Replies for a message nothing matches: neutral, in no one's voice but safe for anyone's.
NEUTRAL_REPLIES = (
    "Hey{comma_name}! So happy to hear from you 😊",
    "Aw thank you{comma_name} 💕 tell me more!",
)


def _words(text: str) -> set[str]:
    return {word for word in _WORDS.findall(normalise(text)) if len(word) > 1}


def _similarity(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


class LocalProvider:
    """Picks, among the creator's custom responses (scored against their trigger) and past
    replies (scored against the fan message they answered), the best fit for the incoming
    message, then adapts it: the fan's name, the creator's emoji preference and length limit."""

    name = LOCAL_PROVIDER
    model = LOCAL_MODEL

    async def complete(self, request: DraftRequest, prompt: Prompt) -> Completion:
        started = time.perf_counter()
        text = self.adapt(self.best_match(request), request)
        latency_ms = round((time.perf_counter() - started) * 1000)
        return Completion(text=text, provider=self.name, model=self.model, latency_ms=latency_ms)

    @staticmethod
    def best_match(request: DraftRequest) -> str:
        incoming = _words(request.incoming)
        candidates = [
            # A custom response is the creator's explicit choice: it wins a tie.
            (_similarity(incoming, _words(custom.trigger)) * 1.25, custom.reply)
            for custom in request.configuration.custom_responses
        ]
        candidates += [
            (_similarity(incoming, _words(example.fan_message)), example.reply)
            for example in request.examples
        ]
        score, reply = max(candidates, default=(0.0, ""), key=lambda candidate: candidate[0])
        if score > 0:
            return reply
        return NEUTRAL_REPLIES[len(request.incoming) % len(NEUTRAL_REPLIES)]

    @staticmethod
    def adapt(reply: str, request: DraftRequest) -> str:
        name = request.fan.display_name.split(" ")[0] if request.fan.display_name else ""
        text = _NAME.sub(name or "babe", reply)
        text = text.replace("{comma_name}", f" {name}" if name else "")
        style = request.configuration.response_style
        if not style.use_emoji:
            text = re.sub(r"\s{2,}", " ", _EMOJI.sub("", text)).strip()
        if len(text) > style.max_length:
            cut = text[: style.max_length - 1].rsplit(" ", 1)[0]
            text = cut.rstrip(",;:") + "…"
        return text


def provider_from_settings(settings: AiAgentSettings) -> Provider:
    """The provider the settings name; `local` needs nothing else."""
    pricing = Pricing(
        settings.ai_llm_input_usd_per_million_tokens, settings.ai_llm_output_usd_per_million_tokens
    )
    api_key = settings.ai_llm_api_key.get_secret_value() if settings.ai_llm_api_key else None
    client: openai.AsyncOpenAI
    if settings.ai_llm_provider == "local":
        return LocalProvider()
    # One client for every draft, its pool as large as the drafts in flight (each holds a
    # connection while its model writes), on aiohttp: httpx's pool looks over every connection
    # it holds for each request, which costs more CPU than the request at this concurrency.
    concurrency = settings.ai_draft_concurrency
    http_client = openai.DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    )
    if settings.ai_llm_provider == "azure":
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=settings.ai_azure_endpoint,
            azure_deployment=settings.ai_llm_model,
            api_version=settings.ai_azure_api_version,
            api_key=api_key,
            timeout=settings.ai_llm_timeout_seconds,
            max_retries=settings.ai_llm_max_retries,
            http_client=http_client,
        )
    else:
        client = openai.AsyncOpenAI(
            base_url=settings.ai_llm_base_url or None,
            # Local OpenAI-compatible servers often want no key, but the SDK insists on one.
            api_key=api_key or "none",
            timeout=settings.ai_llm_timeout_seconds,
            max_retries=settings.ai_llm_max_retries,
            http_client=http_client,
        )
    return OpenAIProvider(
        client=client,
        name=settings.ai_llm_provider,
        model=settings.ai_llm_model,
        pricing=pricing,
        max_output_tokens=settings.ai_llm_max_output_tokens,
    )
