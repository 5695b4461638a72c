"""The entry record: the pod's listing parsed, reconciled with an archive, stored, and checked (pure logic)."""

from __future__ import annotations

import io
import json

import pytest

from kubectl_dr.errors import VerificationError
from kubectl_dr.volumes import listing, tree_check
from kubectl_dr.volumes.entries import Entries, Entry
from kubectl_dr.volumes.listing import Found, ListingChanged
from kubectl_dr.volumes.reconcile import Identity, reconcile, skipped_by_plan
from kubectl_dr.volumes.tar_reader import TarReader
from tests import tarcraft as tc


def stat_listing(rows: list[tuple[str, bytes]]) -> bytes:
    """(stat fields, name) rows → the pod's listing stream (zero-padded, as the pod sends it)."""
    lines = b"".join(fields.encode() + b" " + name + b"\n" for fields, name in rows)
    return lines + b"\0" + b"".join(name + b"\0" for _, name in rows) + bytes(300)


ROOT = ("41fd 4096 3 2 1000 2000 1600000000 8 512 0 0", b".")


def test_names_with_newlines_and_spaces_are_read_exactly() -> None:
    found = listing.parse(stat_listing([ROOT, ("81a4 5 1 11 1000680000 1000680000 -100000 8 512 0 0", b"./a\nb c"),
                                        ("a1ff 3 1 12 1000 2000 1600000001 0 512 0 0", b"./l")]))
    assert list(found) == ["", "a\nb c", "l"]
    assert found["a\nb c"] == Found("a\nb c", "file", 0o644, 5, 1, 11, 1_000_680_000, 1_000_680_000, -100_000, 8)
    assert found["l"].kind == "symlink" and found[""].mode == 0o775


def test_a_listing_whose_walks_differ_is_refused() -> None:
    good = stat_listing([ROOT, ("81a4 5 1 11 0 0 1 8 512 0 0", b"./a")])
    renamed = good.replace(b"./a\0", b"./b\0")
    with pytest.raises(ListingChanged):
        listing.parse(renamed)
    extra = good.replace(b"\0./a\0", b"\0./a\0./c\0")
    with pytest.raises(ListingChanged):
        listing.parse(extra)
    with pytest.raises(VerificationError):
        listing.parse(b"no name list")


def archive_of(raw: bytes):  # type: ignore[no-untyped-def]
    reader = TarReader()
    reader.feed(raw)
    return reader.finish()


def test_reconcile_takes_owners_and_times_from_the_listing() -> None:
    # busybox wrote the big uid's low digits and 0 for the mtime before 1970; the listing knows better.
    raw = (tc.entry(b"./f", b"hello", uid=10824256, mtime=0) + tc.header(b"./l", type=b"2", link=b"f", uid=0)
           + tc.header(b"./h", type=b"1", link=b"./f") + tc.END)
    found = listing.parse(stat_listing([ROOT, ("81a4 5 2 11 1000680000 1000680000 -100000 8 512 0 0", b"./f"),
                                        ("a1ff 1 1 12 1000 2000 1600000001 0 512 0 0", b"./l"),
                                        ("81a4 5 2 11 1000680000 1000680000 -100000 8 512 0 0", b"./h")]))
    record = reconcile(archive_of(raw), found, [])
    assert record.changed == []
    e = record.entries.items
    assert (e["f"].uid, e["f"].mtime) == (1_000_680_000, -100_000)
    assert (e["l"].uid, e["l"].gid, e["l"].target) == (1000, 2000, "f")
    assert e["h"].kind == "hardlink" and e["h"].target == "f"
    assert e[""].mode == 0o775, "the root comes from the listing: the archive holds its entries, not '.'"


def test_reconcile_reports_what_changed_while_it_was_read() -> None:
    raw = tc.entry(b"./grew", b"x" * 10, mtime=1600000005) + tc.entry(b"./new", b"n") + tc.END
    found = listing.parse(stat_listing([ROOT, ("81a4 5 1 11 1000 2000 1600000000 8 512 0 0", b"./grew"),
                                        ("81a4 5 1 12 1000 2000 1600000000 8 512 0 0", b"./gone")]))
    record = reconcile(archive_of(raw), found, [])
    assert sorted(record.changed) == ["gone", "grew", "new"]
    assert record.entries.items["grew"].size == 10, "the archive's contents decide"
    assert record.entries.items["grew"].uid == 1000, "owners still from the listing"


def test_what_a_non_root_pod_cannot_read_is_planned_as_skipped() -> None:
    found = listing.parse(stat_listing([
        ROOT, ("41c0 4096 2 3 0 0 1 8 512 0 0", b"./lost+found"), ("8000 4 1 4 1000 2000 1 8 512 0 0", b"./locked"),
        ("41c0 4096 2 5 0 0 1 8 512 0 0", b"./rootdir"), ("81a0 4 1 6 0 2000 1 8 512 0 0", b"./group-readable"),
        ("c1ff 0 1 7 1000 2000 1 0 512 0 0", b"./sock")]))
    skipped = skipped_by_plan(found, Identity(1000, frozenset({2000})))
    assert [s.path for s in skipped] == ["lost+found", "locked", "rootdir", "sock"]
    assert "unreadable file" in skipped[1].why and "(and its contents)" in skipped[2].why
    assert [s.path for s in skipped_by_plan(found, Identity(0, frozenset()))] == ["lost+found", "sock"]


def entry(path: str, kind: str = "file", **kw: object) -> Entry:
    values: dict[str, object] = {"mode": 0o644, "uid": 1000, "gid": 2000, "size": 5, "mtime": 100}
    values.update(kw)
    return Entry(path, kind, **values)  # type: ignore[arg-type]


def record(*items: Entry) -> Entries:
    return Entries({e.path: e for e in items})


def found(path: str, kind: str = "file", **kw: object) -> Found:
    values: dict[str, object] = {"mode": 0o644, "size": 5, "links": 1, "inode": hash(path) % 10_000, "uid": 1000,
                                 "gid": 2000, "mtime": 100, "blocks": 8}
    values.update(kw)
    return Found(path, kind, **values)  # type: ignore[arg-type]


def test_compare_sorts_problems_from_fixes() -> None:
    wanted = record(entry("", "dir", mode=0o755, size=0), entry("f"), entry("l", "symlink", size=0, target="f"),
                    entry("s", mode=0o4755), entry("sparse", size=10 << 20, blocks=16))
    volume = {"": found("", "dir", mode=0o755, size=4096), "f": found("f", uid=0, gid=0, mtime=7),
              "l": found("l", "symlink", size=1, mode=0o777, uid=0, gid=0), "s": found("s", mode=0o755, uid=0),
              "sparse": found("sparse", size=10 << 20, blocks=20480)}
    result = tree_check.compare(wanted, volume, tree_check.Rules(sparse=True))
    assert result.problems == []
    assert sorted(result.fixes.chown[(1000, 2000)]) == ["f", "l", "s"]
    assert result.fixes.chmod[0o4755] == ["s"], "setuid comes back after the chown that clears it"
    assert result.fixes.touch[100] == ["f"] and result.fixes.dig_holes == ["sparse"]
    wrong = {**volume, "f": found("f", "dir"), "l": found("l", "symlink", size=9)}
    del wrong["s"]
    problems = tree_check.compare(wanted, wrong, tree_check.Rules()).problems
    assert problems == ["'f' is a dir, the backup has a file", "'l' does not point to 'f'", "'s' is missing"]


def test_conflicts_and_extras_for_clean() -> None:
    wanted = record(entry("", "dir"), entry("d", "dir"), entry("d/f"), entry("x"), entry("deep/a/b"))
    volume = {"": found("", "dir"), "d": found("d", "symlink"), "x": found("x", "dir"), "x/inner": found("x/inner"),
              "deep": found("deep"), "other": found("other", "dir"), "other/y": found("other/y"),
              "lost+found": found("lost+found", "dir")}
    assert tree_check.conflicts(wanted, volume) == ["d", "x", "deep"]
    assert tree_check.extras(wanted, volume) == ["x/inner", "other"]


def test_the_record_round_trips_through_its_part() -> None:
    items = record(entry(""), entry("caf\udce9 \n", "symlink", target="../\udcff", uid=1_000_680_000, mtime=-5),
                   entry("dev", "char", rdev=(1, 3)))
    raw = b"".join(items.lines({"tar": "busybox 1.37.0"}))
    again = Entries.read(io.BytesIO(raw), "test")
    assert again.items == items.items
    with pytest.raises(VerificationError, match="line 3"):
        Entries.read(io.BytesIO(raw.replace(b'"symlink"', b'"socketish"')), "test")
    with pytest.raises(VerificationError, match="not a kubectl dr entry listing"):
        Entries.read(io.BytesIO(b'{"format": "other"}\n'), "test")


@pytest.mark.parametrize(("field", "value", "message"), [
    (0, "../etc/passwd", "not a plain relative path inside the volume"),
    (0, "/etc/passwd", "not a plain relative path inside the volume"),
    (0, "a//b", "not a plain relative path inside the volume"),
    (0, "a/./b", "not a plain relative path inside the volume"),
    (0, "a/", "not a plain relative path inside the volume"),
    (0, "a\u0000b", "contains a NUL character"),
    (2, -1, "is not a permission mode"),
    (2, 0o10000, "is not a permission mode"),
    (3, -1, "is not a user and group ID"),
    (4, 2**32 - 1, "is not a user and group ID"),
    (5, -1, "a negative size"),
    (6, 2**63, "a time out of range"),
])
def test_a_record_that_would_drive_chown_chmod_touch_astray_is_refused(field: int, value: object,
                                                                        message: str) -> None:
    """The record is repository content: a restore turns it into chown, chmod and touch in the volume."""
    row: list[object] = ["data/a", "file", 0o644, 1000, 1000, 3, 1_600_000_000, "", 8, 0, 0]
    row[field] = value
    raw = b"".join(record().lines()) + json.dumps(row).encode() + b"\n"
    with pytest.raises(VerificationError, match=message):
        Entries.read(io.BytesIO(raw), "test")
