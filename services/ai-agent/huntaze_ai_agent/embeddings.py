"""Text embeddings from any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM,
llama.cpp, Ollama, a text-embeddings server...), for retrieving the creator's past replies by
meaning. Unset (the default), the agent retrieves them with PostgreSQL text search alone."""

from __future__ import annotations

from collections.abc import Sequence

import openai

from huntaze_ai_agent.config import AiAgentSettings


class EmbeddingError(Exception):
    """No vectors after the client's retries (down, timing out, rate limited, refusing)."""


class Embedder:
    """One model's vectors through an `openai` SDK client (timeouts, retries with backoff)."""

    def __init__(self, *, client: openai.AsyncOpenAI, model: str) -> None:
        self._client = client
        self.model = model

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order, from one request."""
        if not texts:
            return []
        try:
            # Empty strings are refused by some servers: a space embeds as nothing much.
            response = await self._client.embeddings.create(
                model=self.model, input=[text or " " for text in texts]
            )
        except openai.OpenAIError as error:
            raise EmbeddingError(f"{type(error).__name__}: {error}") from error
        vectors = sorted(response.data, key=lambda item: item.index)
        if len(vectors) != len(texts) or any(not item.embedding for item in vectors):
            raise EmbeddingError(f"{len(vectors)} vectors for {len(texts)} texts")
        return [list(item.embedding) for item in vectors]

    async def close(self) -> None:
        await self._client.close()


def embedder_from_settings(settings: AiAgentSettings) -> Embedder | None:
    """The configured embedding model; None when no base URL is set."""
    if not settings.ai_embeddings_base_url:
        return None
    key = settings.ai_embeddings_api_key
    return Embedder(
        client=openai.AsyncOpenAI(
            base_url=settings.ai_embeddings_base_url,
            api_key=key.get_secret_value() if key else "none",
            timeout=settings.ai_embeddings_timeout_seconds,
            max_retries=settings.ai_llm_max_retries,
        ),
        model=settings.ai_embeddings_model,
    )
