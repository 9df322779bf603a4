"""HTTP basic authentication against bcrypt hashes, as exporter-toolkit checks it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from enum import Enum

import bcrypt

_REMEMBERED = 1024
# Checks under way or waiting for the auth thread; past it an attempt is refused unchecked.
MAX_PENDING_CHECKS = 4
_MIN_COST, _MAX_COST = 4, 31


class Verdict(Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    BUSY = "busy"  # too many checks under way: refused without one


class BasicAuth:
    """`check(header)` is ALLOWED when the Authorization header names a user with the right
    password. bcrypt is deliberately slow, so the check runs on the auth object's own thread
    (`executor`, one thread when not given), never on the loop's default pool that the sinks
    and the dead-letter share; at most `max_pending` checks run or wait, and further
    attempts are BUSY at once. Credentials once found good are remembered (as a keyed
    digest, never in clear) so a scrape every few seconds costs one check, not one each.
    `close` shuts the executor down."""

    def __init__(self, users: Mapping[str, bytes], *, executor: Executor | None = None,
                 max_pending: int = MAX_PENDING_CHECKS) -> None:
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._good: set[bytes] = set()
        self._executor = executor
        self._max_pending = max_pending
        self._pending = 0
        # Checked against when the user is unknown, at the dearest cost configured, so an
        # unknown name costs what a known one does and the time taken tells no names.
        self._decoy = _decoy_hash(self._users.values()) if self._users else b""

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    async def allows(self, authorization: str | None) -> bool:
        return await self.check(authorization) is Verdict.ALLOWED

    async def check(self, authorization: str | None) -> Verdict:
        credentials = _credentials(authorization)
        if credentials is None:
            return Verdict.REFUSED
        user, password = credentials
        digest = hmac.new(self._key, user + b"\0" + password, hashlib.sha256).digest()
        if digest in self._good:
            return Verdict.ALLOWED
        if self._pending >= self._max_pending:
            return Verdict.BUSY
        hashed = self._users.get(user.decode("utf-8", "replace"))
        self._pending += 1
        try:
            matches = await asyncio.get_running_loop().run_in_executor(
                self._own_executor(), _checks_out, password, hashed or self._decoy)
        finally:
            self._pending -= 1
        if not (matches and hashed is not None):
            return Verdict.REFUSED
        if len(self._good) >= _REMEMBERED:
            self._good.clear()
        self._good.add(digest)
        return Verdict.ALLOWED

    def close(self) -> None:
        """Shut the executor down, dropping checks not yet begun; a later check makes a
        fresh one when none was given."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _own_executor(self) -> Executor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="govpipe-auth")
        return self._executor


def _decoy_hash(hashes: Iterable[bytes]) -> bytes:
    cost = max([_MIN_COST, *(_cost(hashed) for hashed in hashes)])
    return bcrypt.hashpw(b"decoy", bcrypt.gensalt(rounds=min(cost, _MAX_COST)))


def _cost(hashed: bytes) -> int:
    """The cost of a `$2b$12$...` hash; the minimum for one that does not say."""
    parts = hashed.split(b"$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else _MIN_COST


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
