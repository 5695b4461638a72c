"""What an incremental restore sets in the exec that lists the volume again: the record's owner, mode and time
of every entry it wrote and of every directory above one, and what the listing before the writes found
differing elsewhere; nothing for entries it left alone that already match."""

from __future__ import annotations

from kubectl_dr.volumes.entries import DIR, FILE, HARDLINK, SYMLINK, Entries, Entry
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.tree_check import Rules, compare, predicted_fixes


def entry(path: str, kind: str, *, mode: int = 0o644, uid: int = 1000, mtime: int = 1_600_000_000,
          target: str = "") -> Entry:
    return Entry(path, kind, mode, uid, 2000, 3 if kind == FILE else 0, mtime, target, 1, (0, 0))


def found(e: Entry, **changes: int) -> Found:
    values = {"mode": e.mode, "uid": e.uid, "gid": e.gid, "mtime": e.mtime, "size": e.size, **changes}
    return Found(path=e.path, kind=FILE if e.kind == HARDLINK else e.kind, mode=values["mode"],
                 size=values["size"], links=1, inode=1, uid=values["uid"], gid=values["gid"],
                 mtime=values["mtime"], blocks=8)


def record() -> Entries:
    entries = Entries()
    for e in [entry("", DIR, mode=0o755), entry("a", DIR, mode=0o755), entry("a/b", DIR, mode=0o700),
              entry("a/b/sent", FILE), entry("a/b/kept", FILE), entry("a/link", HARDLINK, target="a/b/sent"),
              entry("c", DIR, mode=0o755), entry("c/chmodded", FILE, mode=0o600), entry("c/sym", SYMLINK)]:
        entries.items[e.path] = e
    return entries


def test_written_entries_and_the_directories_above_them_get_the_record_and_others_only_what_differs() -> None:
    entries = record()
    before = {p: found(e) for p, e in entries.items.items()}
    before["c/chmodded"] = found(entries.items["c/chmodded"], mode=0o644)  # differs, not written: fixed too
    fixes = predicted_fixes(entries, before, {"a/b/sent"}, Rules())
    touched = ["", "a", "a/b", "a/b/sent"]
    assert sorted(p for paths in fixes.chown.values() for p in paths) == touched
    assert fixes.chmod[0o755] == ["", "a"] and fixes.chmod[0o700] == ["a/b"]
    assert sorted(fixes.chmod[0o644]) == ["a/b/sent"] and fixes.chmod[0o600] == ["c/chmodded"]
    assert sorted(fixes.touch[1_600_000_000]) == touched
    assert "a/link" not in str(fixes.chown)  # another name of a/b/sent: set through it
    # The message counts entries, each once, not the changes (owner, mode and time of one entry are three).
    assert fixes.paths() == {*touched, "c/chmodded"} and len(fixes) > len(fixes.paths())


def test_a_pod_that_is_not_root_is_asked_for_no_owners_and_no_modes() -> None:
    entries = record()
    before = {p: found(e) for p, e in entries.items.items()}
    fixes = predicted_fixes(entries, before, {"c/sym"}, Rules(owners=False, modes=False, times_of_uid=1000))
    assert not fixes.chown and not any(fixes.chmod.values())
    assert sorted(fixes.touch[1_600_000_000]) == ["", "c", "c/sym"]
    # Nothing differed before: the record's own listing needs no fix at all.
    assert len(compare(entries, before, Rules()).fixes) == 0
