"""Reads and writes of the `ai` schema. Nothing here commits: the service layer does."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import func, select
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


async def load_configurations(
    session: AsyncSession, *, creator_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, AiConfiguration]:
    """The configurations of several creators in one query (the defaults for those who never
    saved one)."""
    wanted = set(creator_ids)
    rows = await session.execute(
        select(Configuration.creator_id, Configuration.document).where(
            Configuration.creator_id.in_(wanted)
        )
    )
    found = {row.creator_id: AiConfiguration.model_validate(row.document) for row in rows}
    return {creator_id: found.get(creator_id) or AiConfiguration() for creator_id in wanted}


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
