"""The credential vault: each creator's platform secrets, envelope-encrypted.

Every secret gets its own data key (AES-256-GCM, the creator id and the secret's name bound as
associated data, so a row copied to another creator does not decrypt). The data key is wrapped by
a master key: a local key by default (a 0600 file under `HUNTAZE_HOME`, or an environment
variable), or an AWS KMS key (the creator id as encryption context). The encrypted secret sits in
`onlyfans.vault_secrets`, or in AWS Secrets Manager at `of/creds/{creator_id}` when configured.

A rotation re-wraps every data key under the current master key; the secrets themselves are not
re-encrypted. It commits batch by batch and skips what is already done, so it may be stopped and
run again. Nothing here logs, raises or returns a secret's bytes except `open`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import boto3
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.logging import get_logger
from huntaze_onlyfans_worker.config import OnlyfansSettings
from huntaze_onlyfans_worker.models import VaultSecret

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

log = get_logger(__name__)

NONCE_BYTES = 12
KEY_BYTES = 32
LOCAL_PREFIX = "local:"
KMS_PREFIX = "kms:"
SECRETS_MANAGER_PREFIX = "of/creds/"
# Secrets Manager keeps this many encryptions of each secret, so a database commit that fails
# after the upload leaves the row's previous ciphertext in place.
KEPT_VERSIONS = 2


class VaultError(Exception):
    """A vault failure. Its message never contains secret material."""


class SecretUnreadable(VaultError):
    """The secret exists but cannot be decrypted (another creator's row, a missing master key)."""


def _associated_data(creator_id: uuid.UUID, name: str) -> bytes:
    return f"huntaze-onlyfans-vault/{creator_id}/{name}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class KeyProvider(Protocol):
    """Wraps and unwraps data keys under master keys it names with a `key_id`."""

    @property
    def current_key_id(self) -> str: ...

    def owns(self, key_id: str) -> bool: ...

    async def wrap(self, data_key: bytes, *, creator_id: uuid.UUID) -> bytes: ...

    async def unwrap(self, wrapped: bytes, *, key_id: str, creator_id: uuid.UUID) -> bytes: ...


def local_key_id(master_key: bytes) -> str:
    """A stable public name of a master key (a hash prefix; it reveals nothing usable)."""
    return LOCAL_PREFIX + hashlib.sha256(b"huntaze-vault-key-id/" + master_key).hexdigest()[:16]


def parse_master_keys(text: str) -> list[bytes]:
    """Base64 keys separated by commas or lines, the current first."""
    keys: list[bytes] = []
    for token in text.replace(",", "\n").split():
        try:
            key = base64.b64decode(token, validate=True)
        except binascii.Error:
            raise VaultError("a vault master key is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise VaultError(f"a vault master key must be {KEY_BYTES} bytes")
        keys.append(key)
    if not keys:
        raise VaultError("no vault master key is configured")
    return keys


def _write_private(path: Path, content: str) -> None:
    """Writes `content` to `path` readable by its owner only, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(content)
    temporary.replace(path)


def read_key_file(path: Path, *, create: bool) -> list[bytes]:
    """The master keys in `path`; a fresh key is written there first when it is missing and
    `create` is set. A file others may read is refused."""
    if not path.exists():
        if not create:
            raise VaultError(f"the vault key file {path} does not exist")
        _write_private(path, _b64(AESGCM.generate_key(bit_length=256)) + "\n")
    if path.stat().st_mode & 0o077:
        raise VaultError(f"the vault key file {path} must be readable by its owner only (0600)")
    return parse_master_keys(path.read_text())


def add_master_key(path: Path) -> str:
    """Puts a fresh master key first in `path` (the older ones stay, to read what they wrapped
    until a rotation is done). Answers the new key's id."""
    older = read_key_file(path, create=False) if path.exists() else []
    fresh = AESGCM.generate_key(bit_length=256)
    _write_private(path, "\n".join(_b64(key) for key in [fresh, *older]) + "\n")
    return local_key_id(fresh)


class LocalKeyProvider:
    """Master keys held by this process; the first wraps, every one unwraps."""

    def __init__(self, master_keys: Sequence[bytes]) -> None:
        if not master_keys:
            raise VaultError("no vault master key is configured")
        self._keys = {local_key_id(key): key for key in master_keys}
        self._current = local_key_id(master_keys[0])

    @property
    def current_key_id(self) -> str:
        return self._current

    def owns(self, key_id: str) -> bool:
        return key_id in self._keys

    async def wrap(self, data_key: bytes, *, creator_id: uuid.UUID) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._keys[self._current]).encrypt(nonce, data_key, creator_id.bytes)
        return nonce + sealed

    async def unwrap(self, wrapped: bytes, *, key_id: str, creator_id: uuid.UUID) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise SecretUnreadable(f"the master key {key_id} is not configured")
        try:
            return AESGCM(key).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], creator_id.bytes
            )
        except InvalidTag:
            raise SecretUnreadable("a data key does not unwrap for this creator") from None


class KmsKeyProvider:
    """Data keys wrapped by AWS KMS (`Encrypt`/`Decrypt`, the creator id as encryption context).
    It unwraps under any KMS key this process may use, so a new key id is a rotation."""

    def __init__(self, *, key_id: str, region: str, endpoint_url: str | None = None) -> None:
        self._key_id = key_id
        self._client: KMSClient = boto3.client("kms", region_name=region, endpoint_url=endpoint_url)

    @property
    def current_key_id(self) -> str:
        return KMS_PREFIX + self._key_id

    def owns(self, key_id: str) -> bool:
        return key_id.startswith(KMS_PREFIX)

    @staticmethod
    def _context(creator_id: uuid.UUID) -> dict[str, str]:
        return {"huntaze:creator_id": str(creator_id)}

    async def wrap(self, data_key: bytes, *, creator_id: uuid.UUID) -> bytes:
        # boto3 blocks; KMS calls run in a worker thread.
        answer = await asyncio.to_thread(
            self._client.encrypt,
            KeyId=self._key_id,
            Plaintext=data_key,
            EncryptionContext=self._context(creator_id),
        )
        return answer["CiphertextBlob"]

    async def unwrap(self, wrapped: bytes, *, key_id: str, creator_id: uuid.UUID) -> bytes:
        try:
            answer = await asyncio.to_thread(
                self._client.decrypt,
                CiphertextBlob=wrapped,
                KeyId=key_id.removeprefix(KMS_PREFIX),
                EncryptionContext=self._context(creator_id),
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "ClientError")
            raise SecretUnreadable(f"KMS refused to unwrap a data key ({code})") from None
        return answer["Plaintext"]


class KeyRing:
    """The provider that wraps new data keys, and every provider that may unwrap old ones."""

    def __init__(self, current: KeyProvider, *readers: KeyProvider) -> None:
        self.current = current
        self._providers = (current, *readers)

    @property
    def current_key_id(self) -> str:
        return self.current.current_key_id

    async def wrap(self, data_key: bytes, *, creator_id: uuid.UUID) -> tuple[str, bytes]:
        key_id = self.current.current_key_id
        return key_id, await self.current.wrap(data_key, creator_id=creator_id)

    async def unwrap(self, wrapped: bytes, *, key_id: str, creator_id: uuid.UUID) -> bytes:
        for provider in self._providers:
            if provider.owns(key_id):
                return await provider.unwrap(wrapped, key_id=key_id, creator_id=creator_id)
        raise SecretUnreadable(f"no configured provider holds the master key {key_id}")


class SecretsManagerStore:
    """Encrypted secrets in AWS Secrets Manager, one secret `of/creds/{creator_id}` per creator:
    a JSON object name -> {nonce (base64) -> ciphertext (base64)}."""

    def __init__(self, *, region: str, endpoint_url: str | None = None) -> None:
        self._client: SecretsManagerClient = boto3.client(
            "secretsmanager", region_name=region, endpoint_url=endpoint_url
        )

    @staticmethod
    def secret_id(creator_id: uuid.UUID) -> str:
        return f"{SECRETS_MANAGER_PREFIX}{creator_id}"

    def _read(self, creator_id: uuid.UUID) -> dict[str, dict[str, str]]:
        try:
            answer = self._client.get_secret_value(SecretId=self.secret_id(creator_id))
        except self._client.exceptions.ResourceNotFoundException:
            return {}
        entries: dict[str, dict[str, str]] = json.loads(answer["SecretString"])
        return entries

    def _put(self, creator_id: uuid.UUID, name: str, nonce: bytes, ciphertext: bytes) -> None:
        entries = self._read(creator_id)
        versions = entries.get(name, {})
        versions[_b64(nonce)] = _b64(ciphertext)
        entries[name] = dict(list(versions.items())[-KEPT_VERSIONS:])
        body = json.dumps(entries)
        secret_id = self.secret_id(creator_id)
        try:
            self._client.put_secret_value(SecretId=secret_id, SecretString=body)
        except self._client.exceptions.ResourceNotFoundException:
            self._client.create_secret(Name=secret_id, SecretString=body)

    async def put(self, creator_id: uuid.UUID, name: str, nonce: bytes, ciphertext: bytes) -> None:
        await asyncio.to_thread(self._put, creator_id, name, nonce, ciphertext)

    async def get(self, creator_id: uuid.UUID, name: str, nonce: bytes) -> bytes | None:
        entries = await asyncio.to_thread(self._read, creator_id)
        found = entries.get(name, {}).get(_b64(nonce))
        return None if found is None else base64.b64decode(found)

    def _delete(self, creator_id: uuid.UUID) -> None:
        try:
            self._client.delete_secret(
                SecretId=self.secret_id(creator_id), ForceDeleteWithoutRecovery=True
            )
        except self._client.exceptions.ResourceNotFoundException:
            return

    async def delete(self, creator_id: uuid.UUID) -> None:
        await asyncio.to_thread(self._delete, creator_id)


class Vault:
    """Seals and opens secrets inside the caller's transaction (the caller commits)."""

    def __init__(
        self, *, keys: KeyRing, secrets_manager: SecretsManagerStore | None = None
    ) -> None:
        self.keys = keys
        self._secrets_manager = secrets_manager

    async def seal(
        self, session: AsyncSession, *, creator_id: uuid.UUID, name: str, secret: bytes
    ) -> None:
        """Stores `secret` as `name` of this creator, replacing any earlier one."""
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(data_key).encrypt(nonce, secret, _associated_data(creator_id, name))
        key_id, wrapped = await self.keys.wrap(data_key, creator_id=creator_id)
        stored: bytes | None = sealed
        location = "database"
        if self._secrets_manager is not None:
            await self._secrets_manager.put(creator_id, name, nonce, sealed)
            stored, location = None, "secrets_manager"
        values: dict[str, Any] = {
            "key_id": key_id,
            "wrapped_key": wrapped,
            "nonce": nonce,
            "ciphertext": stored,
            "location": location,
        }
        statement = insert(VaultSecret).values(creator_id=creator_id, name=name, **values)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[VaultSecret.creator_id, VaultSecret.name],
                set_={**values, "updated_at": func.now()},
            )
        )

    async def open(
        self, session: AsyncSession, *, creator_id: uuid.UUID, name: str
    ) -> bytes | None:
        """The secret `name` of this creator, or None when none is stored."""
        row = await session.get(VaultSecret, (creator_id, name), populate_existing=True)
        if row is None:
            return None
        ciphertext = row.ciphertext
        if row.location == "secrets_manager":
            if self._secrets_manager is None:
                raise SecretUnreadable("the secret is in Secrets Manager, which is not configured")
            ciphertext = await self._secrets_manager.get(creator_id, name, row.nonce)
        if ciphertext is None:
            raise SecretUnreadable("the secret's ciphertext is missing")
        data_key = await self.keys.unwrap(row.wrapped_key, key_id=row.key_id, creator_id=creator_id)
        try:
            return AESGCM(data_key).decrypt(
                row.nonce, ciphertext, _associated_data(creator_id, name)
            )
        except InvalidTag:
            raise SecretUnreadable("the secret does not decrypt for this creator") from None

    async def forget(self, session: AsyncSession, *, creator_id: uuid.UUID) -> None:
        """Deletes every secret of this creator."""
        await session.execute(delete(VaultSecret).where(VaultSecret.creator_id == creator_id))
        if self._secrets_manager is not None:
            await self._secrets_manager.delete(creator_id)

    async def rotate(
        self, sessions: async_sessionmaker[AsyncSession], *, batch_size: int = 100
    ) -> int:
        """Re-wraps every data key not under the current master key; answers how many it did.
        Each batch commits on its own; rows another rotation holds are skipped, not waited on."""
        current = self.keys.current_key_id
        rewrapped = 0
        while True:
            async with sessions() as session, session.begin():
                rows = (
                    await session.scalars(
                        select(VaultSecret)
                        .where(VaultSecret.key_id != current)
                        .order_by(VaultSecret.creator_id, VaultSecret.name)
                        .limit(batch_size)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                for row in rows:
                    data_key = await self.keys.unwrap(
                        row.wrapped_key, key_id=row.key_id, creator_id=row.creator_id
                    )
                    row.key_id, row.wrapped_key = await self.keys.wrap(
                        data_key, creator_id=row.creator_id
                    )
                    row.updated_at = datetime.now(UTC)
            rewrapped += len(rows)
            if len(rows) < batch_size:
                log.info("vault.rotated", rewrapped=rewrapped, key_id=current)
                return rewrapped


def vault_from_settings(settings: OnlyfansSettings) -> Vault:
    """The vault the settings describe: KMS wraps when a key id is set (local keys, if any,
    still unwrap); otherwise the local master keys, the key file created on first use."""
    local: LocalKeyProvider | None = None
    if settings.onlyfans_vault_master_keys is not None:
        local = LocalKeyProvider(
            parse_master_keys(settings.onlyfans_vault_master_keys.get_secret_value())
        )
    elif settings.onlyfans_vault_kms_key_id is None or settings.vault_key_file().exists():
        local = LocalKeyProvider(read_key_file(settings.vault_key_file(), create=True))
    keys: KeyRing
    if settings.onlyfans_vault_kms_key_id is not None:
        kms = KmsKeyProvider(
            key_id=settings.onlyfans_vault_kms_key_id,
            region=settings.onlyfans_aws_region,
            endpoint_url=settings.onlyfans_aws_endpoint_url,
        )
        keys = KeyRing(kms, local) if local is not None else KeyRing(kms)
    else:
        assert local is not None
        keys = KeyRing(local)
    store = None
    if settings.onlyfans_vault_secrets_manager:
        store = SecretsManagerStore(
            region=settings.onlyfans_aws_region, endpoint_url=settings.onlyfans_aws_endpoint_url
        )
    return Vault(keys=keys, secrets_manager=store)


async def _rotate(settings: OnlyfansSettings, batch_size: int) -> int:
    engine = create_engine(settings.database_url, application_name="onlyfans-vault-rotation")
    try:
        return await vault_from_settings(settings).rotate(
            session_factory(engine), batch_size=batch_size
        )
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """`new-key`: a fresh local master key first in the key file. `rotate`: re-wrap every data
    key under the current master key (run it again after an interruption)."""
    parser = argparse.ArgumentParser(prog="python -m huntaze_onlyfans_worker.vault")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("new-key", help="put a fresh master key first in the key file")
    rotate = commands.add_parser("rotate", help="re-wrap every data key under the current key")
    rotate.add_argument("--batch-size", type=int, default=100)
    arguments = parser.parse_args(argv)
    settings = OnlyfansSettings()
    try:
        if arguments.command == "new-key":
            print(f"new master key {add_master_key(settings.vault_key_file())}")
        else:
            count = asyncio.run(_rotate(settings, arguments.batch_size))
            print(f"re-wrapped {count} data keys")
    except VaultError as error:
        print(f"vault: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
