"""Names under a prefix of an object store's top-level namespace (an S3 bucket, an Azure container)."""

from __future__ import annotations

from typing import ClassVar

from kubectl_dr.repo import ids
from kubectl_dr.repo.errors import RepoError


class PrefixedNames:
    """The URL, the names and the base of a location ``SCHEME TOP/PREFIX``; the dataclass that mixes it
    in holds ``prefix`` (no leading or trailing slash; may be empty) and names its ``top``."""

    scheme: ClassVar[str]
    noun: ClassVar[str]  # what the store calls a name, for messages: "key", "blob"
    prefix: str

    @property
    def top(self) -> str:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"{self.scheme}{self.top}/{self.prefix}".rstrip("/")

    def key(self, *names: str) -> str:
        """The name of ``names`` (an ID, then a file) under the prefix; each one plain name, so that no
        name read from the repository can make a name outside the prefix (DESIGN §8)."""
        for name in names:
            problem = ids.name_problem(name)
            if problem is not None:
                raise RepoError(f"invalid name {name[:60]!r} in {self.url}: {problem} "
                                f"(a {self.noun} outside the prefix)")
        return "/".join([p for p in (self.prefix, *names) if p])

    @property
    def base(self) -> str:
        """The name prefix of everything in the repository ("" or "prefix/")."""
        return f"{self.prefix}/" if self.prefix else ""
