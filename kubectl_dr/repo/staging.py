"""A backup's parts as plain local files, for jobs that must read them as files (more than once, or
with a tool that takes a path), whatever the repository: in S3, or encrypted.

A local unencrypted part is used where it is. Anything else is copied (decrypted) into a private
directory here (mode 0700, files 0600: it is a volume's data or every Secret of a cluster), each part
checked against the manifest's size and SHA-256 as it arrives, which is also the backup's
verification. The directory goes away however the command ends (the command's cleanup stack).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubectl_dr import cleanup
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.repo.crypto import Identity
from kubectl_dr.repo.repository import Backup, Repository
from kubectl_dr.units import size

HEADROOM = 64 * 1024 * 1024


@dataclass(frozen=True)
class LocalParts:
    files: dict[str, Path]  # part name → plaintext file
    staged: bool  # copied here and checked on the way (False: the repository's own files, unchecked)


def local_parts(repo: Repository, backup: Backup, names: Sequence[str], console: Console,
                identity: Sequence[Identity] | None = None) -> LocalParts:
    """The named parts (those the manifest has) as local plaintext files."""
    present = [p for p in backup.manifest.parts if p.name in names]
    local = {p.name: repo.local_file(backup, p.name) for p in present}
    if all(path is not None for path in local.values()):
        return LocalParts({name: path for name, path in local.items() if path is not None}, False)
    needed = sum(p.size for p in present)
    where = Path(tempfile.gettempdir())
    free = shutil.disk_usage(where).free
    if free < needed + HEADROOM:
        raise DrError(f"backup {backup.id} must be copied here before it is used ({size(needed)}), and {where} "
                      f"has {size(free)} free", hint="Point TMPDIR at a directory with room and run again.")
    directory = Path(tempfile.mkdtemp(prefix=f"kubectl-dr-{backup.id}-"))
    cleanup.current().push(f"remove the staged copy of backup {backup.id} in {directory}",
                           lambda: shutil.rmtree(directory, ignore_errors=True))
    what = "decrypting and checking" if any(p.encrypted for p in present) else "downloading and checking"
    console.say(f"{what} backup {backup.id} from {backup.location} into {directory}")
    files = {}
    for p in present:
        target = directory / p.name
        with console.progress(f"stage {p.name}", p.size) as bar, repo.open_part(backup, p.name, identity) as src, \
                open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
                bar.advance(len(chunk))
        files[p.name] = target
    return LocalParts(files, True)
