"""Key files and the config file.

A key file (`keys/ID`, plain JSON, ID = SHA-256 of its bytes) holds scrypt's parameters and salt and
the master key encrypted with the key scrypt derives from the password. Opening a repository tries the
password on every key file, as restic does. The scrypt parameters come from an untrusted file, so their
memory is bounded before hashing.

The config (`config`, encrypted with the master key, never compressed) names the repository version
(we write 2: zstd compression), its ID and the chunker polynomial.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from kubectl_dr.repo.restic import crypto, nodes, polynomial
from kubectl_dr.repo.restic.nodes import ResticFormatError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1  # restic's lower bound for its calibrated parameters
_MAX_SCRYPT_MEMORY = 1 << 30
SUPPORTED_VERSIONS = (1, 2)


class WrongPassword(crypto.ResticCryptoError):
    """No key file of the repository opens with the password given."""


@dataclass(frozen=True)
class Config:
    version: int
    id: str
    chunker_polynomial: int

    def to_bytes(self) -> bytes:
        return json.dumps({"version": self.version, "id": self.id,
                           "chunker_polynomial": f"{self.chunker_polynomial:x}"}).encode()

    @classmethod
    def new(cls) -> Config:
        return cls(2, os.urandom(32).hex(), polynomial.random_polynomial())

    @classmethod
    def from_bytes(cls, data: bytes) -> Config:
        try:
            doc = json.loads(data)
            cfg = cls(int(doc["version"]), nodes.check_id(doc["id"]), int(doc["chunker_polynomial"], 16))
        except (ValueError, KeyError, TypeError) as exc:
            raise ResticFormatError(f"the repository's config is malformed ({exc})") from exc
        if cfg.version not in SUPPORTED_VERSIONS:
            raise ResticFormatError(f"restic repository version {cfg.version} is not supported (1 and 2 are)")
        return cfg


def new_key_file(master: crypto.Key, password: bytes) -> bytes:
    salt = os.urandom(64)
    user_key = crypto.kdf(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    doc = {
        "created": nodes.format_time(time.time_ns()),
        "username": _username(),
        "hostname": socket.gethostname(),
        "kdf": "scrypt", "N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
        "salt": crypto._b64(salt),
        "data": crypto._b64(user_key.seal(json.dumps(master.to_json()).encode())),
    }
    return json.dumps(doc).encode()


def key_file_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_key_file(data: bytes, password: bytes) -> crypto.Key:
    """The master key in one key file; `WrongPassword` if the password does not open it."""
    try:
        doc: Any = json.loads(data)
        kdf_name, n, r, p = doc["kdf"], doc["N"], doc["r"], doc["p"]
        salt, sealed = crypto._unb64(doc["salt"]), crypto._unb64(doc["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ResticFormatError(f"a key file is malformed ({exc})") from exc
    if kdf_name != "scrypt":
        raise ResticFormatError(f"a key file uses the unknown KDF {kdf_name!r}")
    if not all(isinstance(v, int) and v > 0 for v in (n, r, p)) or n & (n - 1) or 128 * r * n * p > _MAX_SCRYPT_MEMORY:
        raise ResticFormatError(f"a key file's scrypt parameters are out of range (N={n}, r={r}, p={p})")
    user_key = crypto.kdf(password, salt, n, r, p)
    try:
        plain = user_key.open(sealed)
    except crypto.ResticCryptoError as exc:
        raise WrongPassword("wrong password for this key file") from exc
    try:
        return crypto.Key.from_json(json.loads(plain))
    except ValueError as exc:
        raise ResticFormatError("a key file's master key is not JSON") from exc


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
