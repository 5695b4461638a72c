"""restic's authenticated encryption: AES-256-CTR, then Poly1305-AES over the ciphertext.

Every stored file and every blob is `IV(16) || ciphertext || MAC(16)`. The IV is random and is the whole
128-bit counter block of CTR mode (restic increments all 128 bits, as `cryptography`'s CTR does). The
MAC is Poly1305 keyed with `r` (clamped by Poly1305 itself) and `s = AES-128_k(IV)`, over the ciphertext
only; `k` and `r` are the two halves of the 32-byte MAC key. The MAC is checked before anything is
decrypted, so a tampered repository is refused rather than parsed.

Keys come from the password through scrypt (N, r, p and salt stored in the key file): 64 bytes, of which
the first 32 encrypt and the next 32 are the MAC key as `k || r`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from kubectl_dr.repo.errors import RepoError

IV_SIZE = 16
MAC_SIZE = 16
OVERHEAD = IV_SIZE + MAC_SIZE
_PADS = threading.local()  # each thread's ECB encryptors, by MAC key (an encryptor is not shared between threads)


class ResticCryptoError(RepoError):
    """Data that does not authenticate with the repository's key (wrong key, or damaged/tampered bytes)."""


@dataclass(frozen=True)
class Key:
    encrypt: bytes  # 32 bytes, AES-256
    mac_k: bytes  # 16 bytes, AES-128 key that makes the Poly1305 pad from the IV
    mac_r: bytes  # 16 bytes, Poly1305's r (clamped when used)

    @classmethod
    def random(cls) -> Key:
        return cls(os.urandom(32), os.urandom(16), os.urandom(16))

    @classmethod
    def from_kdf(cls, raw: bytes) -> Key:
        if len(raw) != 64:
            raise ValueError("a restic key is 64 bytes")
        return cls(raw[:32], raw[32:48], raw[48:64])

    def to_json(self) -> dict[str, Any]:
        """The master key as a key file stores it (inside its encrypted `data`)."""
        return {"mac": {"k": _b64(self.mac_k), "r": _b64(self.mac_r)}, "encrypt": _b64(self.encrypt)}

    @classmethod
    def from_json(cls, doc: Any) -> Key:
        try:
            key = cls(_unb64(doc["encrypt"]), _unb64(doc["mac"]["k"]), _unb64(doc["mac"]["r"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ResticCryptoError(f"the repository's master key is malformed ({exc})") from exc
        if (len(key.encrypt), len(key.mac_k), len(key.mac_r)) != (32, 16, 16):
            raise ResticCryptoError("the repository's master key has the wrong length")
        return key

    def _mac(self, iv: bytes, ciphertext: bytes | memoryview) -> bytes:
        return Poly1305.generate_tag(self.mac_r + self._pad(iv), ciphertext)

    def _pad(self, iv: bytes) -> bytes:
        """`s = AES-128_k(IV)`, from this thread's ECB encryptor of `k`: ECB keeps no state between blocks, and
        making the encryptor cost more than the rest of a small file's MAC (~7 µs of ~26 µs per blob)."""
        encryptors: dict[bytes, Any] | None = getattr(_PADS, "encryptors", None)
        if encryptors is None:
            encryptors = _PADS.encryptors = {}
        enc = encryptors.get(self.mac_k)
        if enc is None:
            enc = encryptors[self.mac_k] = Cipher(algorithms.AES(self.mac_k), modes.ECB()).encryptor()
        # Checked before it reaches the encryptor: a shorter IV would stay buffered there and shift every later
        # pad of this thread.
        if len(iv) != 16:
            raise ResticCryptoError(f"an IV of {len(iv)} bytes (16 expected)")
        pad: bytes = enc.update(iv)
        return pad

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytearray:
        sealed = bytearray(len(plaintext) + OVERHEAD)
        with memoryview(sealed) as view:
            self.seal_into(plaintext, view)
        return sealed

    def seal_into(self, plaintext: bytes | bytearray | memoryview, out: memoryview) -> None:
        """Writes `IV || ciphertext || MAC` into `out` (exactly `len(plaintext) + OVERHEAD` bytes): the
        ciphertext in place behind the IV, the MAC behind it, no intermediate object. A pack's blobs are
        sealed straight into the pack's buffer this way; joining the three parts as separate objects and
        copying the result into the pack cost more CPU than the AES itself (1.5 ms against 0.2 ms per MiB,
        measured on the 2-core test machine)."""
        size = len(plaintext)
        if len(out) != size + OVERHEAD:
            raise ValueError(f"{len(out)} bytes cannot hold {size} sealed bytes")
        iv = os.urandom(IV_SIZE)
        out[:IV_SIZE] = iv
        enc = Cipher(algorithms.AES(self.encrypt), modes.CTR(iv)).encryptor()
        with out[IV_SIZE:] as room, out[IV_SIZE:IV_SIZE + size] as ciphertext:
            # update_into wants room for a block less one byte beyond the input: the MAC's 16 bytes are it.
            written = enc.update_into(plaintext, room)
            enc.finalize()  # CTR holds nothing back
            if written != size:
                raise ResticCryptoError(f"AES-CTR wrote {written} of {size} bytes")
            out[IV_SIZE + size:] = self._mac(iv, ciphertext)

    def open(self, sealed: bytes | memoryview) -> bytes:
        data = bytes(sealed)
        if len(data) < OVERHEAD:
            raise ResticCryptoError(f"an encrypted item of {len(data)} bytes is shorter than its IV and MAC")
        iv, ciphertext, tag = data[:IV_SIZE], data[IV_SIZE:-MAC_SIZE], data[-MAC_SIZE:]
        if not hmac.compare_digest(self._mac(iv, ciphertext), tag):
            raise ResticCryptoError("ciphertext verification failed (wrong key, or the data is damaged)")
        dec = Cipher(algorithms.AES(self.encrypt), modes.CTR(iv)).decryptor()
        return dec.update(ciphertext) + dec.finalize()


def kdf(password: bytes, salt: bytes, n: int, r: int, p: int) -> Key:
    # hashlib's scrypt refuses more memory than maxmem; restic's defaults (N=2^15, r=8) need 32 MiB.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return Key.from_kdf(hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=64))


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)
