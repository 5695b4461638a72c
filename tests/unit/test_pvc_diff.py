"""`pvc diff`'s comparison and its words: sides labelled, path order, times as times, counts as the restore plan's."""

from __future__ import annotations

from kubectl_dr.volumes.diff import compare, rfc3339
from kubectl_dr.volumes.entries import Entries, Entry
from kubectl_dr.volumes.listing import Found

T0 = 1_764_590_400  # 2025-12-01T12:00:00Z


def _entries(*items: Entry) -> Entries:
    entries = Entries()
    for item in items:
        entries.items[item.path] = item
    return entries


def _found(path: str, kind: str, size: int = 0, mode: int = 0o644, uid: int = 0, mtime: int = T0,
           inode: int = 1) -> Found:
    return Found(path, kind, mode, size, 1, inode, uid, 0, mtime, 0)


def test_every_entry_a_restore_writes_is_counted_and_listed_in_path_order() -> None:
    # A tar file of a new directory with a file in it, one file that grew, one the same: the restore plan
    # counts four entries, so the diff does too (the file inside the new directory is an addition of its own).
    entries = _entries(Entry("same", "file", 0o644, 0, 0, 4, T0), Entry("grows", "file", 0o644, 0, 0, 3, T0 + 60),
                       Entry("dir", "dir", 0o755, 0, 0, 0, T0), Entry("dir/new", "file", 0o644, 0, 0, 1, T0))
    found = {"": _found("", "dir", mode=0o755), "same": _found("same", "file", 4),
             "grows": _found("grows", "file", 1), "extra": _found("extra", "file", 1),
             "dir-x": _found("dir-x", "file", 1)}
    result = compare("shop", "data", None, entries, found, file="./volume.tar")

    assert [(d.path, d.change) for d in result.differences] == [
        ("dir", "added"), ("dir/new", "added"), ("dir-x", "removed"), ("extra", "removed"), ("grows", "changed")]
    text = result.summary().splitlines()
    assert text[:2] == ["--- volume shop/data (live)", "+++ tar file ./volume.tar (what a restore writes)"]
    assert text[2:7] == ["+ dir/", "+ dir/new", "- dir-x", "- extra",
                         "~ grows  size 1 → 3, mtime 2025-12-01T12:00:00Z → 2025-12-01T12:01:00Z"]
    assert text[7] == ("a restore would write the 4 entries of the tar file ./volume.tar: 2 new, 1 changed, "
                       "1 as they are; with --clean it would also remove 2 entries only the volume holds")
    assert "None" not in result.summary()

    data = result.to_dict()
    assert data["backup"] is None and data["file"] == "./volume.tar"
    assert data["summary"] == {"entries": 4, "added": 2, "changed": 1, "unchanged": 1, "removed": 2, "needsClean": 0}
    grows = next(d for d in data["differences"] if d["path"] == "grows")
    assert grows == {"path": "grows", "change": "changed", "kind": "file",
                     "fields": {"size": {"old": 1, "new": 3},
                                "mtime": {"old": "2025-12-01T12:00:00Z", "new": "2025-12-01T12:01:00Z"}}}


def test_fields_carry_old_and_new_values() -> None:
    entries = _entries(Entry("", "dir", 0o755, 0, 0, 0, T0), Entry("conf", "file", 0o600, 1000, 0, 2, T0),
                       Entry("was-dir", "file", 0o644, 0, 0, 1, T0))
    found = {"": _found("", "dir", mode=0o755), "conf": _found("conf", "file", 2, mode=0o644),
             "was-dir": _found("was-dir", "dir", mode=0o755), "was-dir/inside": _found("was-dir/inside", "file")}
    result = compare("shop", "data", "20261202T101500Z-pvc-shop-data", entries, found)
    by_path = {d["path"]: d for d in result.to_dict()["differences"]}
    assert by_path["conf"]["fields"] == {"mode": {"old": "0644", "new": "0600"}, "uid": {"old": 0, "new": 1000}}
    assert by_path["was-dir"]["fields"] == {"kind": {"old": "dir", "new": "file"}}
    assert "was-dir/inside" not in by_path  # part of the change of kind, not listed apart
    assert result.summary().splitlines()[1] == "+++ backup 20261202T101500Z-pvc-shop-data (what a restore writes)"
    # tar cannot put a file where a directory stands: the diff says a restore needs --clean, as the restore would.
    assert result.summary().splitlines()[-1].endswith("; 1 entry of another kind in the way ('was-dir') needs --clean")


def test_identical_says_so_with_the_count() -> None:
    entries = _entries(Entry("", "dir", 0o755, 0, 0, 0, T0), Entry("a", "file", 0o644, 0, 0, 1, T0))
    found = {"": _found("", "dir", mode=0o755), "a": _found("a", "file", 1)}
    result = compare("shop", "data", "B", entries, found)
    assert result.identical
    assert result.summary().splitlines()[-1] == (
        "identical: the volume holds the 2 entries of the backup B as they are, and nothing else")


def test_times_are_rfc3339_utc_also_before_1970() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(-100_000) == "1969-12-30T20:13:20Z"
