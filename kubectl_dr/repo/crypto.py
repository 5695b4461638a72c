"""Client-side encryption with age (through pyrage): X25519 (`age1…`) and SSH (`ssh-ed25519`, `ssh-rsa`) keys.

A part is encrypted as one standard age file, so `age -d -i KEY data.tar.age` opens it without us.
pyrage encrypts between file-like objects (`encrypt_io`), reading 8 KiB at a time: our writer is fed
chunk by chunk instead, so the age stream runs in a thread between a bounded queue (the plaintext we are
given) and the sink (the stored bytes). Memory stays a few chunks whatever the size. Decryption is the
same in reverse.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_dr.repo.errors import RepoError

AGE_SUFFIX = ".age"
# Plaintext chunks (1 MiB from the exec layer) waiting for the encryption thread: two keep it busy while
# the caller fetches the next; eight held 6 MiB more at the peak of an encrypted upload for no speed.
_ENCRYPT_QUEUE = 2
_QUEUE_DEPTH = 8
_POLL = 0.2  # seconds between checks that the other side of a pipe is still alive


class CryptoError(RepoError):
    """A recipient or identity that cannot be used, or data that does not decrypt."""


@dataclass(frozen=True)
class Recipient:
    """A public key to encrypt to; ``text`` is what the manifest records (no SSH comment)."""

    text: str
    key: Any  # pyrage.x25519.Recipient | pyrage.ssh.Recipient


@dataclass(frozen=True)
class Identity:
    """A private key that may open an age file; ``origin`` says where it came from, for messages."""

    origin: str
    key: Any  # pyrage.x25519.Identity | pyrage.ssh.Identity


def parse_recipient(text: str, origin: str = "--encrypt-to") -> Recipient:
    """``age1…``, ``ssh-ed25519 AAAA… [comment]`` or ``ssh-rsa AAAA… [comment]``."""
    import pyrage

    value = text.strip()
    fields = value.split()
    try:
        if value.startswith("age1") and len(fields) == 1:
            return Recipient(value, pyrage.x25519.Recipient.from_str(value))
        if len(fields) >= 2 and fields[0] in ("ssh-ed25519", "ssh-rsa"):
            canonical = f"{fields[0]} {fields[1]}"
            return Recipient(canonical, pyrage.ssh.Recipient.from_str(canonical))
    except (pyrage.RecipientError, ValueError) as exc:
        raise CryptoError(f"{origin}: {_shown(value)} is not a valid age or SSH public key: {exc}") from None
    raise CryptoError(
        f"{origin}: {_shown(value)} is not an age recipient (age1…) or an SSH public key (ssh-ed25519 or ssh-rsa)",
        hint="Give the public key itself, or the path of a file with one key per line "
        "(age-keygen -y, or ~/.ssh/*.pub).",
    )


def parse_recipients(values: Iterable[str], origin: str = "--encrypt-to") -> list[Recipient]:
    """Keys given on the command line or in the config; a value naming a file means every key in it."""
    found: list[Recipient] = []
    for value in values:
        candidate = Path(value).expanduser()
        if not value.startswith(("age1", "ssh-")) and candidate.is_file():
            found += recipients_from_file(candidate)
        else:
            found.append(parse_recipient(value, origin))
    unique: dict[str, Recipient] = {}
    for r in found:
        unique.setdefault(r.text, r)
    return list(unique.values())


def recipients_from_file(path: Path) -> list[Recipient]:
    """One recipient a line, `#` comments and blank lines ignored (age's -R format)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CryptoError(f"cannot read the recipients file {path}: {exc.strerror}") from None
    keys = [parse_recipient(line, str(path)) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise CryptoError(f"the recipients file {path} has no keys in it")
    return keys


def load_identities(paths: Sequence[str | Path]) -> list[Identity]:
    """age identity files (``AGE-SECRET-KEY-1…`` lines) or unencrypted OpenSSH private keys."""
    import pyrage

    found: list[Identity] = []
    for value in paths:
        path = Path(value).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CryptoError(f"cannot read the identity file {path}: {exc.strerror}") from None
        text = data.decode("utf-8", errors="replace")
        if "-----BEGIN" in text:
            try:
                found.append(Identity(str(path), pyrage.ssh.Identity.from_buffer(data)))
            except (pyrage.IdentityError, ValueError) as exc:
                raise CryptoError(
                    f"the SSH private key {path} cannot be used: {exc}",
                    hint="Only unencrypted OpenSSH ed25519 and RSA keys work; for a passphrase-protected key, "
                    "make a copy without the passphrase (ssh-keygen -p) on a machine you trust.",
                ) from None
            continue
        keys = [line.strip() for line in text.splitlines() if line.strip().startswith("AGE-SECRET-KEY-")]
        if not keys:
            raise CryptoError(f"{path} holds no age identity (AGE-SECRET-KEY-1…) and no SSH private key")
        for key in keys:
            try:
                found.append(Identity(str(path), pyrage.x25519.Identity.from_str(key)))
            except (pyrage.IdentityError, ValueError) as exc:
                raise CryptoError(f"{path}: an age identity in it is malformed: {exc}") from None
    return found


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "…")


class _Failed(Exception):
    """Raised inside a pipe when its other side has stopped (an error or an abort)."""


class Encryptor:
    """Plaintext in through ``write``, age ciphertext out to ``sink`` (called in the encryption thread)."""

    def __init__(self, recipients: Sequence[Recipient], sink: Callable[[memoryview], None]) -> None:
        self._recipients = [r.key for r in recipients]
        self._sink = sink
        self._queue: queue.Queue[bytes | None] = queue.Queue(_ENCRYPT_QUEUE)
        self._pending = memoryview(b"")
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="age-encrypt", daemon=True)
        self._thread.start()

    # the reader pyrage pulls plaintext from
    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            item = self._get()
            if item is None:
                return b""
            self._pending = memoryview(item)
        n = len(self._pending) if size < 0 else min(size, len(self._pending))
        out = bytes(self._pending[:n])
        self._pending = self._pending[n:]
        return out

    def _get(self) -> bytes | None:
        while True:
            if self._stop.is_set():
                raise _Failed
            try:
                return self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue

    # the writer pyrage pushes ciphertext to
    def _write(self, data: bytes) -> int:
        if self._stop.is_set():
            raise _Failed
        self._sink(memoryview(data))
        return len(data)

    def _run(self) -> None:
        import pyrage

        writer = _Writer(self._write)
        try:
            pyrage.encrypt_io(self, writer, self._recipients)
        except BaseException as exc:  # reported to the feeding thread, which raises it
            self.error = writer.error or _from_age(exc)
            self._stop.set()

    def write(self, data: bytes | memoryview) -> None:
        item = bytes(data)  # the caller reuses its buffer
        while True:
            self._raise_failure()
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """End the stream and wait until every ciphertext byte went to the sink."""
        while True:
            self._raise_failure()
            try:
                self._queue.put(None, timeout=_POLL)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_failure()

    def abort(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _raise_failure(self) -> None:
        if self.error is not None:
            raise _unwrap(self.error, "encrypting")
        if not self._thread.is_alive() and self._stop.is_set():
            raise CryptoError("encryption stopped")


class Decryptor:
    """A file-like plaintext reader over an age ciphertext reader, decrypting in a thread."""

    def __init__(self, source: Any, identities: Sequence[Identity]) -> None:
        self._source = source
        self._identities = [i.key for i in identities]
        self._queue: queue.Queue[bytes | None] = queue.Queue(_QUEUE_DEPTH * 8)  # 8 KiB items
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._pending = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._run, name="age-decrypt", daemon=True)
        self._thread.start()

    def _put(self, data: bytes) -> int:
        while True:
            if self._stop.is_set():
                raise _Failed
            try:
                self._queue.put(bytes(data), timeout=_POLL)
                return len(data)
            except queue.Full:
                continue

    def _run(self) -> None:
        import pyrage

        writer = _Writer(self._put)
        reader = _Reader(self._source)
        try:
            pyrage.decrypt_io(reader, writer, self._identities)
        except BaseException as exc:
            # Our own failures (a damaged or unreadable source, a closed pipe) as they were raised;
            # pyrage's own (no matching key, a chunk that does not authenticate) as what they mean.
            self.error = reader.error or writer.error or _from_age(exc)
        finally:
            try:
                while not self._stop.is_set():
                    try:
                        self._queue.put(None, timeout=_POLL)
                        break
                    except queue.Full:
                        continue
            except BaseException:
                pass

    def readinto(self, buffer: memoryview) -> int:
        while not self._pending and not self._done:
            item = self._queue.get()
            if item is None:
                self._done = True
                self._thread.join()
                if self.error is not None:
                    raise _unwrap(self.error, "decrypting")
                break
            self._pending = memoryview(item)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class _Reader:
    """The file-like reader handed to pyrage; keeps our own exception, which pyrage would flatten."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._source.read(size))
        except BaseException as exc:
            self.error = exc
            raise


class _Writer:
    """The file-like writer handed to pyrage; keeps our own exception, which pyrage would flatten."""

    def __init__(self, write: Callable[[bytes], int]) -> None:
        self._write = write
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._write(data)
        except _Failed:
            raise
        except BaseException as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        pass


def _from_age(error: BaseException) -> BaseException:
    """An exception raised by pyrage itself as a CryptoError."""
    import pyrage

    if isinstance(error, _Failed):
        return error
    text = str(error)
    if isinstance(error, pyrage.DecryptError) and ("no matching keys" in text.lower()
                                                   or "no identity matched" in text.lower()):
        return NoMatchingIdentity(text)
    if isinstance(error, pyrage.DecryptError | OSError):
        return CryptoError(f"the encrypted data does not decrypt ({text}): it was damaged or is not an age file")
    return CryptoError(f"{type(error).__name__}: {error}")


def _unwrap(error: BaseException, doing: str) -> BaseException:
    if isinstance(error, _Failed):
        return CryptoError(f"{doing} stopped")
    return error


class NoMatchingIdentity(CryptoError):
    """None of the identities given opens the file."""


