"""The `onlyfans` schema: the credential vault's sealed secrets.

A sealed secret holds only ciphertext: the secret encrypted under its own data key, and that data
key wrapped by a master key (`key_id` names which, so a rotation finds what it has not re-wrapped
yet). With Secrets Manager configured, `ciphertext` is null and the encrypted secret lives at
`of/creds/{creator_id}` instead.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index, LargeBinary, MetaData, Text
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "onlyfans"

SECRET_LOCATIONS = ("database", "secrets_manager")

metadata = MetaData(
    schema=SCHEMA,
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    },
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Base(DeclarativeBase):
    metadata = metadata


class VaultSecret(Base):
    """One secret of one creator (say `credentials` or `session`), envelope-encrypted."""

    __tablename__ = "vault_secrets"
    __table_args__ = (
        CheckConstraint(_in("location", SECRET_LOCATIONS), name="location"),
        CheckConstraint(
            "(location = 'database') = (ciphertext IS NOT NULL)", name="ciphertext_location"
        ),
        Index(None, "key_id"),
    )

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    key_id: Mapped[str] = mapped_column(Text)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    location: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )
