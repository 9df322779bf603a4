"""HTTP basic authentication against bcrypt hashes, as exporter-toolkit checks it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

import bcrypt

# Checked against when the user is unknown, so an unknown name costs what a known one does
# and the time taken does not tell which names exist.
_DECOY_HASH = bcrypt.hashpw(b"decoy", bcrypt.gensalt(rounds=10))
_REMEMBERED = 1024


class BasicAuth:
    """`allows(header)` is True when the Authorization header names a user with the right
    password. bcrypt is deliberately slow, so the check runs in a worker thread, and
    credentials once found good are remembered (as a keyed digest, never in clear) so a
    scrape every few seconds costs one check, not one per scrape."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._good: set[bytes] = set()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    async def allows(self, authorization: str | None) -> bool:
        credentials = _credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        digest = hmac.new(self._key, user + b"\0" + password, hashlib.sha256).digest()
        if digest in self._good:
            return True
        hashed = self._users.get(user.decode("utf-8", "replace"))
        matches = await asyncio.to_thread(_checks_out, password, hashed or _DECOY_HASH)
        if not (matches and hashed is not None):
            return False
        if len(self._good) >= _REMEMBERED:
            self._good.clear()
        self._good.add(digest)
        return True


def _checks_out(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # over bcrypt's 72 bytes: no hash can match it
        return False


def _credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) from a `Basic` Authorization header; None when there is none."""
    if authorization is None:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None
