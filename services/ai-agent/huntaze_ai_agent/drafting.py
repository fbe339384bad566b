"""One draft: the prompt, one provider call within the creator's budget, the output checks, and
the local provider whenever the LLM is out of budget, failing, or wrote something the checks
refuse. The LLM call and the checks are separate steps so that a caller can store what it paid
for in between and, after a crash, finish from the stored completion without paying twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from huntaze_ai_agent.checks import Violation, check_reply
from huntaze_ai_agent.configuration import Budget
from huntaze_ai_agent.prompts import DraftRequest, Prompt, build_prompt
from huntaze_ai_agent.providers import Completion, LocalProvider, Provider, ProviderError
from huntaze_kit.logging import get_logger

log = get_logger(__name__)

FallbackReason = Literal["over_budget", "provider_failed", "output_rejected"]


@dataclass(frozen=True)
class Usage:
    """What a creator's LLM calls cost so far in the budget's period."""

    tokens: int = 0
    cost_micros: int = 0


def within_budget(budget: Budget, spent: Usage) -> bool:
    if budget.monthly_tokens is not None and spent.tokens >= budget.monthly_tokens:
        return False
    return budget.monthly_cost_micros is None or spent.cost_micros < budget.monthly_cost_micros


@dataclass(frozen=True)
class Attempt:
    """The provider's answer (None when none was paid for) and why the local provider may
    have to stand in."""

    completion: Completion | None
    fallback: FallbackReason | None = None


@dataclass(frozen=True)
class Draft:
    """A checked reply (None when not even the local provider wrote a safe one)."""

    text: str | None
    completion: Completion
    prompt_fingerprint: str
    fallback: FallbackReason | None = None
    paid: Completion | None = None
    rejected: list[Violation] = field(default_factory=list)


class Drafter:
    def __init__(self, provider: Provider, *, local: LocalProvider | None = None) -> None:
        self.provider = provider
        self.local = local or LocalProvider()

    @property
    def pays(self) -> bool:
        """True when the provider costs money (and so is called at most once per message)."""
        return not isinstance(self.provider, LocalProvider)

    async def attempt(self, request: DraftRequest, prompt: Prompt, *, spent: Usage) -> Attempt:
        """Calls the provider once, unless the creator's budget is spent."""
        if self.pays and not within_budget(request.configuration.budget, spent):
            return Attempt(None, "over_budget")
        try:
            return Attempt(await self.provider.complete(request, prompt))
        except ProviderError as error:
            log.warning("ai.provider_failed", provider=self.provider.name, error=str(error))
            return Attempt(None, "provider_failed")

    async def finish(self, request: DraftRequest, prompt: Prompt, attempt: Attempt) -> Draft:
        """Checks the provider's reply; the local provider stands in when there is none or the
        checks refuse it."""
        fallback = attempt.fallback
        rejected: list[Violation] = []
        if attempt.completion is not None:
            rejected = self.check(request, prompt, attempt.completion.text)
            if not rejected:
                return Draft(
                    attempt.completion.text,
                    attempt.completion,
                    prompt.fingerprint,
                    paid=attempt.completion if self.pays else None,
                )
            fallback = "output_rejected"
        paid = attempt.completion if self.pays else None
        local = await self.local.complete(request, prompt)
        text = local.text if not self.check(request, prompt, local.text) else None
        return Draft(text, local, prompt.fingerprint, fallback, paid, rejected)

    async def draft(self, request: DraftRequest, *, spent: Usage | None = None) -> Draft:
        prompt = build_prompt(request)
        return await self.finish(
            request, prompt, await self.attempt(request, prompt, spent=spent or Usage())
        )

    @staticmethod
    def check(request: DraftRequest, prompt: Prompt, text: str) -> list[Violation]:
        return check_reply(text, configuration=request.configuration, system_prompt=prompt.system)
