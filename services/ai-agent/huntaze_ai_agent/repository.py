"""Reads and writes of the `ai` schema. Nothing here commits: the service layer does."""

from __future__ import annotations

import uuid

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze_ai_agent.configuration import AiConfiguration
from huntaze_ai_agent.models import Configuration


async def load_configuration(session: AsyncSession, *, creator_id: uuid.UUID) -> AiConfiguration:
    """The creator's configuration; the defaults until they save one."""
    document = await session.get(Configuration, creator_id)
    if document is None:
        return AiConfiguration()
    return AiConfiguration.model_validate(document.document)


async def save_configuration(
    session: AsyncSession, *, creator_id: uuid.UUID, configuration: AiConfiguration
) -> None:
    document = configuration.model_dump(mode="json")
    statement = insert(Configuration).values(creator_id=creator_id, document=document)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Configuration.creator_id],
            set_={"document": statement.excluded.document, "updated_at": func.now()},
        )
    )
