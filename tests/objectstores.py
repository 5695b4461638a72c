"""What the S3 and Azure repository tests share: a fixed clock, a backup written in chunks, a writer
process killed mid-write, and one view of either store (its objects, what a killed writer left staged)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from kubectl_dr.repo import Repository, open_repository

T0 = datetime(2026, 11, 22, 1, 55, 12, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 60) -> None:
        self.now += timedelta(seconds=seconds)


def write_backup(repo: Repository, data: bytes, source: dict[str, str] | None = None, chunk: int = 1 << 20) -> str:
    with repo.create("pvc", source or {"namespace": "shop", "pvc": "db"}, "shop-db") as writer:
        with writer.open_part("data.tar") as part:
            for i in range(0, len(data), chunk):
                part.write(data[i : i + chunk])
        return writer.commit({"files": 1}).id


def killed_writer(url: str, env: dict[str, str], size: int) -> str:
    """A real writer process, SIGKILLed after `size` bytes, once the parts it sent are in; its backup ID."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from kubectl_dr.repo import open_repository
        repo = open_repository({url!r}, dict(os.environ))
        w = repo.create("pvc", {{"namespace": "shop", "pvc": "db"}}, "shop-db")
        part = w.open_part("data.tar")
        chunk = os.urandom(1 << 20)
        for _ in range({size} >> 20):
            part.write(chunk)
        for future in list(part._sink._inflight):
            future.result()
        print(w.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert child.returncode == -9, child.stderr
    return child.stdout.strip()


@dataclass
class Store:
    """One bucket or container of a real server, seen the same way whichever the store."""

    url: str  # of the bucket or container, no prefix
    env: dict[str, str]
    part: int  # the smallest part the store's sink sends
    objects: Callable[[str], dict[str, int]]  # prefix → {key: size}
    staged: Callable[[], list[str]]  # names with parts sent but not put together (incomplete uploads)
    staged_words: str  # how a leftover names one of them
    put: Callable[[str, bytes], None]

    def repo(self, prefix: str = "team/prod", clock: Clock | None = None) -> Repository:
        return open_repository(f"{self.url}/{prefix}", self.env, clock=clock or Clock())
