"""The credential vault against real PostgreSQL, and its AWS paths against a moto server."""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_onlyfans_worker.config import OnlyfansSettings
from huntaze_onlyfans_worker.models import VaultSecret
from huntaze_onlyfans_worker.vault import (
    KeyRing,
    KmsKeyProvider,
    LocalKeyProvider,
    SecretsManagerStore,
    SecretUnreadable,
    Vault,
    VaultError,
    add_master_key,
    read_key_file,
    vault_from_settings,
)

SECRET = b'{"email": "creator@example.com", "password": "tangerine-orbit-41"}'


def local_vault(*keys: bytes) -> Vault:
    return Vault(keys=KeyRing(LocalKeyProvider(list(keys))))


def fresh_key() -> bytes:
    return bytes(uuid.uuid4().bytes + uuid.uuid4().bytes)


async def seal(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, creator_id: uuid.UUID, secret: bytes
) -> None:
    async with sessions() as session, session.begin():
        await vault.seal(session, creator_id=creator_id, name="credentials", secret=secret)


async def read(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, creator_id: uuid.UUID
) -> bytes | None:
    async with sessions() as session:
        return await vault.open(session, creator_id=creator_id, name="credentials")


async def test_only_ciphertext_reaches_the_database(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    vault = local_vault(fresh_key())
    creator = uuid.uuid4()
    await seal(sessions, vault, creator, SECRET)
    async with sessions() as session:
        dump = await session.scalar(
            text("SELECT string_agg(t::text, '') FROM onlyfans.vault_secrets t")
        )
        row = await session.get(VaultSecret, (creator, "credentials"))
    assert dump is not None
    assert row is not None
    assert row.location == "database"
    for fragment in (b"tangerine-orbit-41", b"creator@example.com"):
        assert fragment.hex() not in dump
        assert fragment.decode() not in dump
    assert row.ciphertext is not None
    assert SECRET not in row.ciphertext
    assert await read(sessions, vault, creator) == SECRET


async def test_a_row_moved_to_another_creator_does_not_decrypt(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    vault = local_vault(fresh_key())
    owner, other = uuid.uuid4(), uuid.uuid4()
    await seal(sessions, vault, owner, SECRET)
    async with sessions() as session, session.begin():
        await session.execute(
            text("UPDATE onlyfans.vault_secrets SET creator_id = :other WHERE creator_id = :owner"),
            {"other": other, "owner": owner},
        )
    with pytest.raises(SecretUnreadable) as refused:
        await read(sessions, vault, other)
    assert "tangerine" not in str(refused.value)
    assert await read(sessions, vault, owner) is None


async def test_sealing_again_replaces_and_forget_deletes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    vault = local_vault(fresh_key())
    creator = uuid.uuid4()
    await seal(sessions, vault, creator, b"first")
    await seal(sessions, vault, creator, b"second")
    assert await read(sessions, vault, creator) == b"second"
    async with sessions() as session, session.begin():
        await vault.forget(session, creator_id=creator)
    assert await read(sessions, vault, creator) is None


async def test_rotation_rewraps_every_key_keeps_every_secret_and_can_run_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old_key, new_key = fresh_key(), fresh_key()
    before = local_vault(old_key)
    creators = [uuid.uuid4() for _ in range(7)]
    for index, creator in enumerate(creators):
        await seal(sessions, before, creator, f"secret {index}".encode())

    after = local_vault(new_key, old_key)
    # A first run stopped after one batch of three is resumed by the next run.
    async with sessions() as session, session.begin():
        first = (
            await session.scalars(select(VaultSecret).order_by(VaultSecret.creator_id).limit(3))
        ).all()
        for row in first:
            data_key = await before.keys.unwrap(
                row.wrapped_key, key_id=row.key_id, creator_id=row.creator_id
            )
            row.key_id, row.wrapped_key = await after.keys.wrap(data_key, creator_id=row.creator_id)
    assert await after.rotate(sessions, batch_size=2) == 4
    assert await after.rotate(sessions, batch_size=2) == 0

    only_new = local_vault(new_key)
    for index, creator in enumerate(creators):
        assert await read(sessions, only_new, creator) == f"secret {index}".encode()
    with pytest.raises(SecretUnreadable):
        await read(sessions, local_vault(old_key), creators[0])


async def test_the_key_file_is_private_and_new_key_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "home" / "onlyfans-vault.keys"
    first = read_key_file(path, create=True)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_key_file(path, create=False) == first
    add_master_key(path)
    keys = read_key_file(path, create=False)
    assert len(keys) == 2
    assert keys[1] == first[0]
    path.chmod(0o644)
    with pytest.raises(VaultError, match="0600"):
        read_key_file(path, create=False)


async def test_the_rotate_command_rewraps_under_a_new_key_file_entry(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUNTAZE_HOME", str(tmp_path))
    monkeypatch.setenv("HUNTAZE_DATABASE_URL", database_url)
    creator = uuid.uuid4()
    await seal(sessions, vault_from_settings(OnlyfansSettings()), creator, SECRET)
    for command in ("new-key", "rotate", "rotate"):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "huntaze_onlyfans_worker.vault",
            command,
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await process.communicate()
        assert process.returncode == 0
    assert output.decode().splitlines()[-1] == "re-wrapped 0 data keys"
    vault = vault_from_settings(OnlyfansSettings())
    async with sessions() as session:
        row = await session.get(VaultSecret, (creator, "credentials"))
    assert row is not None
    assert row.key_id == vault.keys.current_key_id
    assert await read(sessions, vault, creator) == SECRET


async def test_kms_wraps_the_data_keys_and_binds_the_creator(
    sessions: async_sessionmaker[AsyncSession], moto_url: str
) -> None:
    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=moto_url)
    key_id = kms.create_key(Description="vault")["KeyMetadata"]["KeyId"]
    provider = KmsKeyProvider(key_id=key_id, region="us-east-1", endpoint_url=moto_url)
    vault = Vault(keys=KeyRing(provider))
    owner, other = uuid.uuid4(), uuid.uuid4()
    await seal(sessions, vault, owner, SECRET)
    async with sessions() as session:
        row = await session.get(VaultSecret, (owner, "credentials"))
    assert row is not None
    assert row.key_id == f"kms:{key_id}"
    assert await read(sessions, vault, owner) == SECRET
    with pytest.raises(SecretUnreadable):
        await provider.unwrap(row.wrapped_key, key_id=row.key_id, creator_id=other)


async def test_rotation_from_a_local_key_to_kms(
    sessions: async_sessionmaker[AsyncSession], moto_url: str
) -> None:
    local_key = fresh_key()
    creator = uuid.uuid4()
    await seal(sessions, local_vault(local_key), creator, SECRET)
    key_id = boto3.client("kms", region_name="us-east-1", endpoint_url=moto_url).create_key()[
        "KeyMetadata"
    ]["KeyId"]
    kms = KmsKeyProvider(key_id=key_id, region="us-east-1", endpoint_url=moto_url)
    vault = Vault(keys=KeyRing(kms, LocalKeyProvider([local_key])))
    assert await vault.rotate(sessions) == 1
    assert await read(sessions, Vault(keys=KeyRing(kms)), creator) == SECRET


async def test_secrets_manager_holds_the_ciphertext_at_of_creds(
    sessions: async_sessionmaker[AsyncSession],
    moto_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = SecretsManagerStore(region="us-east-1", endpoint_url=moto_url)
    vault = Vault(keys=KeyRing(LocalKeyProvider([fresh_key()])), secrets_manager=store)
    creator = uuid.uuid4()
    await seal(sessions, vault, creator, b"first")
    await seal(sessions, vault, creator, SECRET)
    async with sessions() as session:
        row = await session.get(VaultSecret, (creator, "credentials"))
    assert row is not None
    assert row.location == "secrets_manager"
    assert row.ciphertext is None
    manager = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_url)
    stored = manager.get_secret_value(SecretId=f"of/creds/{creator}")["SecretString"]
    assert "tangerine" not in stored
    assert base64.b64encode(SECRET).decode() not in stored
    assert await read(sessions, vault, creator) == SECRET
    async with sessions() as session, session.begin():
        await vault.forget(session, creator_id=creator)
    with pytest.raises(manager.exceptions.ResourceNotFoundException):
        manager.get_secret_value(SecretId=f"of/creds/{creator}")
    assert "tangerine" not in caplog.text
