"""The written summary of a period: plain sentences from the figures (`facts`), or an LLM's
reading of the same figures when one is configured, reached the way the AI agent reaches one
(the `openai` SDK: OpenAI, Azure OpenAI or any OpenAI-compatible server). When the LLM fails,
the factual summary is kept instead: a summary is never missing because a provider is down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import openai
import orjson

from huntaze_analytics.config import AnalyticsSettings
from huntaze_analytics.insights import money
from huntaze_kit.logging import get_logger

log = get_logger(__name__)

FACTS = "facts"
MAX_OUTPUT_TOKENS = 400
INSTRUCTIONS = (
    "You write a short summary (at most 5 sentences) of a content creator's business over a "
    "period, for the creator. Use only the figures given, in their units (amounts are in US "
    "dollars), say what changed against the previous period and end with one concrete "
    "suggestion drawn from the fan insights. No greeting, no headings."
)


@dataclass(frozen=True)
class Figures:
    """What a summary is written from."""

    period_days: int
    start_day: str
    end_day: str
    revenue_cents: int
    previous_revenue_cents: int
    purchases: int
    new_fans: int
    active_fans: int
    expiring: int
    messages_received: int
    messages_sent: int
    median_response_seconds: float | None
    ai_acceptance_percent: float | None
    top_spender: str
    churn_risks: int
    quiet_whales: int

    def as_json(self) -> str:
        return orjson.dumps(self.__dict__).decode()


def _change(current: int, previous: int) -> str:
    if previous == 0:
        return "with nothing the period before" if current else "as in the period before"
    percent = (current - previous) * 100 / previous
    direction = "up" if percent >= 0 else "down"
    return f"{direction} {abs(percent):.0f}% on the period before ({money(previous)})"


def factual_summary(figures: Figures) -> str:
    parts = [
        f"Over the {figures.period_days} days from {figures.start_day} to {figures.end_day}, "
        f"revenue was {money(figures.revenue_cents)} from {figures.purchases} purchases, "
        f"{_change(figures.revenue_cents, figures.previous_revenue_cents)}.",
        f"{figures.new_fans} new fans joined and {figures.active_fans} were active; "
        f"{figures.expiring} subscriptions end within a week with renewal off.",
        f"Fans sent {figures.messages_received} messages and got {figures.messages_sent}"
        + (
            f", answered in {figures.median_response_seconds / 60:.0f} minutes at the median."
            if figures.median_response_seconds is not None
            else "."
        ),
    ]
    if figures.ai_acceptance_percent is not None:
        parts.append(f"{figures.ai_acceptance_percent:.0f}% of AI suggestions were sent.")
    if figures.top_spender:
        parts.append(f"Top spender: {figures.top_spender}.")
    if figures.churn_risks or figures.quiet_whales:
        parts.append(
            f"{figures.churn_risks} fans are at risk of churning and {figures.quiet_whales} big "
            "spenders went quiet: a personal message may bring them back."
        )
    return " ".join(parts)


class SummaryWriter(Protocol):
    name: str

    async def write(self, figures: Figures) -> tuple[str, str]:
        """The summary, and who wrote it."""
        ...


class FactsWriter:
    name = FACTS

    async def write(self, figures: Figures) -> tuple[str, str]:
        return factual_summary(figures), FACTS


class LlmWriter:
    """Asks an LLM; the factual summary when it fails or answers nothing."""

    def __init__(self, *, client: openai.AsyncOpenAI, name: str, model: str) -> None:
        self._client = client
        self.name = name
        self._model = model

    async def write(self, figures: Figures) -> tuple[str, str]:
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[
                    {"role": "system", "content": INSTRUCTIONS},
                    {"role": "user", "content": f"Figures: {figures.as_json()}"},
                ],
                max_tokens=MAX_OUTPUT_TOKENS,
                temperature=0.3,
            )
        except openai.OpenAIError as error:
            log.warning("summary_llm_failed", provider=self.name, error=str(error)[:300])
            return factual_summary(figures), FACTS
        text = (response.choices[0].message.content or "").strip() if response.choices else ""
        if not text:
            return factual_summary(figures), FACTS
        return text, f"{self.name}:{response.model or self._model}"


def writer_from_settings(settings: AnalyticsSettings) -> SummaryWriter:
    provider = settings.analytics_summary_provider
    if provider == FACTS:
        return FactsWriter()
    key = settings.analytics_llm_api_key
    api_key = key.get_secret_value() if key else None
    client: openai.AsyncOpenAI
    if provider == "azure":
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=settings.analytics_azure_endpoint,
            azure_deployment=settings.analytics_llm_model,
            api_version=settings.analytics_azure_api_version,
            api_key=api_key,
            timeout=settings.analytics_llm_timeout_seconds,
            max_retries=settings.analytics_llm_max_retries,
        )
    else:
        client = openai.AsyncOpenAI(
            base_url=settings.analytics_llm_base_url or None,
            # Local OpenAI-compatible servers often want no key, but the SDK insists on one.
            api_key=api_key or "none",
            timeout=settings.analytics_llm_timeout_seconds,
            max_retries=settings.analytics_llm_max_retries,
        )
    return LlmWriter(client=client, name=provider, model=settings.analytics_llm_model)
