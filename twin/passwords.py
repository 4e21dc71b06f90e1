"""Charger password hashes: the keyed fast scheme new hashes use, the scrypt scheme of
older ones, and the server-side key.

Why a keyed fast hash: charger passwords are machine-generated secrets of 16 characters
or more (the OCPP 1.6 security whitepaper's AuthorizationKey is 16-20 bytes, 2.0.1's
BasicAuthPassword 16-40 characters), so guessing one is infeasible whatever the hash
costs; a slow hash only protects guessable passwords. What a leaked database must not
give away is covered by the key: HMAC-SHA256 (RFC 2104) with a secret that lives outside
the database (a file in the data dir, or a setting), so a copy of the ``chargers`` table
alone tests nothing. A check costs microseconds, so a restarted bridge re-admits a whole
fleet without the seconds of CPU per thousand chargers that scrypt at its default cost
needs (~40 ms each).

Stored forms, each naming its scheme so old hashes keep working:

- ``hmac-sha256$<key id>$<salt b64>$<digest b64>``: digest = HMAC(key, salt || password);
  the key id (a keyed digest of a constant, not of the key) tells which key made it, so a
  process with a different key says so instead of refusing everyone silently.
- ``scrypt$<N>$<r>$<p>$<salt b64>$<digest b64>`` (RFC 7914): hashes made before the keyed
  scheme; still verified, and replaced by a keyed hash at the next successful check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 16
"""OCPP 1.6 security whitepaper: AuthorizationKey "minimal 16 bytes"; 2.0.1 A00.FR.205:
BasicAuthPassword at least 16 characters."""
MAX_PASSWORD_LENGTH = 64
KEY_FILE = "charger-password.key"
MIN_KEY_BYTES = 32

HMAC_SCHEME = "hmac-sha256"
SCRYPT_SCHEME = "scrypt"
# Cost of scrypt hashes made by processes that have no key (tools, old tests); stored
# hashes name their own cost.
LEGACY_SCRYPT_COST = 14
_SCRYPT_R, _SCRYPT_P = 8, 1


class PasswordKeyError(RuntimeError):
    """The server-side key cannot be read, created, or is too short."""


class WeakPasswordError(ValueError):
    """A charger password shorter than :data:`MIN_PASSWORD_LENGTH` characters."""


def check_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(
            f"charger passwords must be at least {MIN_PASSWORD_LENGTH} characters "
            f"(OCPP security whitepaper); this one has {len(password)}"
        )


# --- the key ------------------------------------------------------------------------------
def key_from_text(text: str) -> bytes:
    """A key given as a setting: its UTF-8 bytes (e.g. the output of ``openssl rand -hex 32``)."""
    key = text.strip().encode()
    if len(key) < MIN_KEY_BYTES:
        raise PasswordKeyError(
            f"the charger password key must be at least {MIN_KEY_BYTES} characters "
            "(e.g. openssl rand -hex 32)"
        )
    return key


def password_key(configured: str | None, data_dir: Path) -> bytes:
    """The key a process uses: the setting when given, else the data dir's key file."""
    return key_from_text(configured) if configured else load_or_create_key(data_dir)


def load_or_create_key(data_dir: Path) -> bytes:
    """The key in ``data_dir``, created on first use (owner-only, 0600).

    Created under a temporary name and linked into place, so processes starting together
    on one data dir all end up with the first one's key and none reads a half-written file.
    """
    path = data_dir / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
            log.info("created the charger password key %s (keep it with the database)", path)
        except FileExistsError:
            pass  # another process made it first: its key wins
    except OSError as exc:
        raise PasswordKeyError(f"cannot create the charger password key {path}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PasswordKeyError(f"cannot read the charger password key {path}: {exc}") from exc
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: chmod 600 it", path)
    try:
        return key_from_text(text)
    except PasswordKeyError as exc:
        raise PasswordKeyError(f"{path}: {exc}") from exc


def key_id(key: bytes) -> str:
    """A short name of the key that reveals nothing about it."""
    return hmac.new(key, b"chargetwin charger password key id", hashlib.sha256).hexdigest()[:12]


# --- hashing ------------------------------------------------------------------------------
class PasswordHasher:
    """Makes and checks stored password hashes with one server-side key (or none)."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self.key_id = key_id(key) if key is not None else None
        self._warned_ids: set[str] = set()

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def hash(self, password: str) -> str:
        """The stored form for a new password: keyed, or scrypt without a key."""
        if self._key is None or self.key_id is None:
            return scrypt_hash(password)
        salt = secrets.token_bytes(16)
        digest = hmac.new(self._key, salt + password.encode(), hashlib.sha256).digest()
        b64 = base64.b64encode
        return f"{HMAC_SCHEME}${self.key_id}${b64(salt).decode()}${b64(digest).decode()}"

    def check_fast(self, password: str, stored: str) -> bool | None:
        """The answer for a keyed hash (microseconds); None for a hash that needs
        :func:`check_scrypt` (slow, to be run off the event loop)."""
        if stored.startswith(SCRYPT_SCHEME + "$"):
            return None
        try:
            scheme, stored_key_id, salt, digest = stored.split("$")
            if scheme != HMAC_SCHEME:
                return False
            if self._key is None or stored_key_id != self.key_id:
                if stored_key_id not in self._warned_ids:
                    self._warned_ids.add(stored_key_id)
                    log.error(
                        "a charger password hash was made with key %s, this process has %s: "
                        "every process that checks or sets charger passwords needs the same "
                        "--charger-password-key (or the same data dir)",
                        stored_key_id,
                        self.key_id,
                    )
                return False
            expected = base64.b64decode(digest)
            actual = hmac.new(
                self._key, base64.b64decode(salt) + password.encode(), hashlib.sha256
            ).digest()
        except ValueError:
            return False
        return hmac.compare_digest(actual, expected)

    def outdated(self, stored: str) -> bool:
        """Whether a stored hash should be replaced by a keyed one at its next success."""
        return self._key is not None and not stored.startswith(f"{HMAC_SCHEME}${self.key_id}$")


def scrypt_hash(password: str, cost: int = LEGACY_SCRYPT_COST) -> str:
    """A salted scrypt hash at N = 2**cost (the scheme before the keyed one)."""
    n = 2**cost
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        dklen=32,
        maxmem=_scrypt_memory(n, _SCRYPT_R),
    )
    b64 = base64.b64encode
    return (
        f"{SCRYPT_SCHEME}${n}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"
    )


def _scrypt_memory(n: int, r: int) -> int:
    """Room for scrypt's 128 * N * r bytes and its bookkeeping (OpenSSL's default limit,
    32 MiB, stops at N = 2**14 with r = 8)."""
    return 2 * 128 * n * r


def check_scrypt(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCRYPT_SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=_scrypt_memory(int(n), int(r)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
