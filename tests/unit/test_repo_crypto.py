"""Client-side encryption with age, on real files and a real S3 server: X25519 and SSH keys, refused
without the identity, checked with it, and opened by the real `age` CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kubectl_dr.repo import (
    BackupCorruptError,
    EncryptedBackupError,
    LocalRepository,
    RepoError,
    Repository,
    load_identities,
    open_repository,
)
from kubectl_dr.repo.crypto import CryptoError, parse_recipients
from tests.s3server import S3Server


@pytest.fixture()
def age_key(tmp_path: Path) -> tuple[str, Path]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "age-identity.txt"
    path.write_text(f"# created for a test\n{identity}\n")
    return str(identity.to_public()), path


@pytest.fixture()
def ssh_key(tmp_path: Path) -> tuple[str, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "id_ed25519"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode() + " ops@example", path


def _write(repo: Repository, data: bytes, recipients: list[str] | None = None) -> str:
    with repo.create("etcd-snapshot", {"cluster": "https://cp:6443", "member": "m1"}, "cp",
                     recipients=recipients) as writer:
        with writer.open_part("snapshot.db") as part:
            for i in range(0, len(data), 100_000):
                part.write(data[i : i + 100_000])
        return writer.commit({}).id


def _repos(kind: str, tmp_path: Path, server: S3Server | None) -> Repository:
    if kind == "local":
        return LocalRepository(tmp_path / "repo")
    assert server is not None
    return open_repository(f"s3://{server.new_bucket()}/enc", {**os.environ, **server.env()})


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_encrypted_backup_needs_its_identity(kind: str, tmp_path: Path, age_key: tuple[str, Path],
                                             ssh_key: tuple[str, Path], request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("seaweedfs") if kind == "s3" else None
    repo = _repos(kind, tmp_path, server)
    data = os.urandom(1_234_567) + b"-----BEGIN every Secret of the cluster-----" * 10
    recipient, identity_file = age_key
    backup_id = _write(repo, data, [recipient, ssh_key[0]])
    backup = repo.get(backup_id)

    # The manifest keeps what listing and pruning need, never the data: sizes, digests, the public keys.
    part = backup.manifest.part("snapshot.db")
    assert part.size == len(data) and part.sha256 == hashlib.sha256(data).hexdigest()
    assert part.stored is not None and part.stored.file == "snapshot.db.age" and part.stored.size > part.size
    assert backup.manifest.encryption == {"format": "age", "recipients": [recipient, ssh_key[0].rsplit(" ", 1)[0]]}
    stored = b"".join(iter(lambda s=repo.open_stored(backup, "snapshot.db"): s.read(1 << 20), b""))
    assert stored.startswith(b"age-encryption.org/v1\n") and b"every Secret" not in stored

    # Without an identity: refused, for reading and for checking the contents; the stored bytes check.
    with pytest.raises(EncryptedBackupError, match=r"is encrypted \(age, to age1") as refused:
        repo.open_part(backup, "snapshot.db")
    assert "--identity" in (refused.value.hint or "")
    with pytest.raises(EncryptedBackupError):
        repo.verify(backup)
    repo.verify(backup, stored_only=True)
    with pytest.raises(RepoError, match="is encrypted" if kind == "local" else "not in a local directory"):
        backup.part_path("snapshot.db")
    assert repo.local_file(backup, "snapshot.db") is None

    # With either key: decrypted, both digests checked.
    for key_file in (identity_file, ssh_key[1]):
        identities = load_identities([key_file])
        repo.verify(backup, identity=identities)
        with repo.open_part(backup, "snapshot.db", identity=identities) as stream:
            assert stream.read() == data

    # Another key: a clear refusal naming the recipients.
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    with pytest.raises(RepoError, match="none of the identities given opens backup"), \
            repo.open_part(backup, "snapshot.db", identity=load_identities([stranger])) as stream:
        stream.read()


def test_the_age_cli_opens_a_stored_part(tmp_path: Path, age_key: tuple[str, Path]) -> None:
    """The break-glass path: a stored part is a standard age file, `age -d` opens it without kubectl-dr."""
    age = shutil.which("age")
    if age is None:
        from tests.s3server import missing

        missing("the age CLI is not installed (apt-get install age)")
    repo = LocalRepository(tmp_path / "repo")
    data = os.urandom(300_000)
    backup_id = _write(repo, data, [age_key[0]])
    out = subprocess.run([str(age), "-d", "-i", str(age_key[1]), str(repo.path / backup_id / "snapshot.db.age")],
                         capture_output=True, check=True)
    assert out.stdout == data


def test_tampered_ciphertext_is_damage(tmp_path: Path, age_key: tuple[str, Path]) -> None:
    repo = LocalRepository(tmp_path / "repo")
    backup_id = _write(repo, os.urandom(500_000), [age_key[0]])
    stored = repo.path / backup_id / "snapshot.db.age"
    raw = bytearray(stored.read_bytes())
    raw[200_000] ^= 1
    stored.write_bytes(bytes(raw))
    identities = load_identities([age_key[1]])
    with pytest.raises(BackupCorruptError, match=r"snapshot\.db.* does not decrypt"):
        repo.verify(backup_id, identity=identities)
    with pytest.raises(BackupCorruptError, match="has SHA-256"):
        repo.verify(backup_id, stored_only=True)


def test_repository_defaults_and_bad_keys(tmp_path: Path, age_key: tuple[str, Path]) -> None:
    """The repository's recipients (from --encrypt-to or the config file) apply to every new backup;
    recipients=[] opts out; keys that are not keys are refused with what to give instead."""
    repo = LocalRepository(tmp_path / "repo", recipients=[age_key[0]], identities=load_identities([age_key[1]]))
    encrypted = repo.get(_write(repo, b"secret"))
    plain = repo.get(_write(repo, b"public", recipients=[]))
    assert encrypted.manifest.encryption is not None and plain.manifest.encryption is None
    with repo.open_part(encrypted, "snapshot.db") as stream:  # the repository's identities
        assert stream.read() == b"secret"

    keys_file = tmp_path / "recipients.txt"
    keys_file.write_text(f"# ops team\n{age_key[0]}\n\n")
    assert [r.text for r in parse_recipients([str(keys_file)])] == [age_key[0]]
    with pytest.raises(CryptoError, match="is not an age recipient"):
        parse_recipients(["hello"])
    with pytest.raises(CryptoError, match="not a valid age or SSH public key"):
        parse_recipients(["age1notakey"])
    not_a_key = tmp_path / "nothing.txt"
    not_a_key.write_text("nothing here\n")
    with pytest.raises(CryptoError, match="holds no age identity"):
        load_identities([not_a_key])
    with pytest.raises(CryptoError, match="cannot read the identity file"):
        load_identities([tmp_path / "missing"])
