"""The rescue pod's scripts, run here with GNU tools and with busybox applets on trees an app wrote.

The streams' count (dd's records) and SHA-256 must be those of the exact bytes on stdout (backup,
listing) or of exactly `size` bytes of stdin (restore, whatever follows them). Then the whole path a
backup and a restore take — listing, tar, the reader, the reconciliation, extraction, the fixes and
the check — must give back the tree exactly, as the pod would, with each tar.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.volumes import listing, scripts, tree_check
from kubectl_dr.volumes.reconcile import Identity, reconcile, skipped_by_plan
from kubectl_dr.volumes.tar_reader import TarReader
from tests.datasets import build_app_tree, differences, snapshot

BUSYBOX = "/usr/bin/busybox"
APPLETS = ("sh", "tar", "tee", "dd", "mkfifo", "sha256sum", "sed", "cut", "cat", "rm", "find", "stat", "printf",
           "chown", "chmod", "touch", "true", "df", "tail", "head", "id", "grep", "wc")
FLAVOURS = ["gnu", "busybox"]


def _toolbox(tmp_path: Path, flavour: str) -> str:
    if flavour == "gnu":
        if not shutil.which("tar"):
            pytest.skip("GNU tar not installed")
        return "/usr/bin:/bin:/usr/sbin:/sbin"
    if not Path(BUSYBOX).exists():
        pytest.skip(f"{BUSYBOX} not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in APPLETS:
        (bin_dir / applet).symlink_to(BUSYBOX)
    return str(bin_dir)


def _local(script: str, data: Path, scratch: Path) -> list[str]:
    return ["sh", "-c", script.replace(scripts.SCRATCH, str(scratch)).replace(scripts.DATA, str(data))]


def _run(script: str, data: Path, scratch: Path, path: str,
         stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(_local(script, data, scratch), input=stdin, capture_output=True, env={"PATH": path})


def _out_stream(script: str, data: Path, scratch: Path, path: str) -> tuple[bytes, scripts.StreamReport]:
    result = _run(script, data, scratch, path)
    report = scripts.parse_report(result.stderr)
    assert result.returncode == report.tar_exit
    assert (report.size, report.partial_blocks) == (len(result.stdout), 0)
    assert report.sha256 == hashlib.sha256(result.stdout).hexdigest()
    assert len(result.stdout) % scripts.BIG == 0, "the last block is padded to a whole 64 KiB"
    return result.stdout, report


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_app_tree_comes_back_exactly_through_the_pod_scripts(tmp_path: Path, flavour: str) -> None:
    path = _toolbox(tmp_path, flavour)
    tar = scripts.GNU if flavour == "gnu" else scripts.BUSYBOX
    src, out, scratch = tmp_path / "src", tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    build_app_tree(src)
    before = snapshot(src)

    raw_listing, _ = _out_stream(scripts.listing_script(), src, scratch, path)
    found = listing.parse(raw_listing)
    assert set(found) == {os.fsdecode(p) if p != b"." else "" for p in before}
    skipped = skipped_by_plan(found, Identity(0, frozenset()))
    assert [s.path for s in skipped] == ["lost+found"]

    stream, report = _out_stream(scripts.backup_script(tar), src, scratch, path)
    assert report.tar_exit == 0
    reader = TarReader(gnu_sparse=tar == scripts.GNU)
    reader.feed(stream)
    archive = reader.finish()
    record = reconcile(archive, found, skipped)
    assert record.changed == []
    entries = record.entries
    assert entries.items["big-uid/owned"].uid == 1_000_680_000, "the listing, not busybox's header"
    assert entries.items["old"].mtime == -100_000
    assert entries.items["node_modules/.bin/tool"].uid == 1000

    out.mkdir()
    restore = _run(scripts.restore_script(len(stream), tar=tar, keep_owners=True), out, scratch, path,
                   stdin=stream + b"\0" * 700)
    restored = scripts.parse_report(restore.stderr)
    assert (restored.size, restored.sha256, restored.tar_exit) == (len(stream), report.sha256, 0), restore.stderr
    rules = tree_check.Rules(sparse=False)
    after = listing.parse(_out_stream(scripts.listing_script(), out, scratch, path)[0])
    comparison = tree_check.compare(entries, after, rules)
    assert comparison.problems == []
    if tar == scripts.BUSYBOX:
        assert comparison.fixes.chown, "busybox tar leaves symlink owners and large uids to the fixes"
    (scratch / "fix.sh").write_bytes(scripts.fix_script(comparison.fixes, strict=True)
                                     .replace(scripts.DATA.encode(), str(out).encode()))
    fix = subprocess.run(["sh", str(scratch / "fix.sh")], capture_output=True, env={"PATH": path})
    assert fix.returncode == 0, fix.stderr
    final = listing.parse(_out_stream(scripts.listing_script(), out, scratch, path)[0])
    assert tree_check.differences(entries, final, rules) == []
    lost = {k: v for k, v in before.items() if not k.startswith(b"lost+found")}
    assert differences(lost, snapshot(out)) == []


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("size", [512, 65536, 65536 + 512, 3 * 65536 + 10240])
def test_restore_counts_exactly_size_bytes(tmp_path: Path, flavour: str, size: int) -> None:
    """Whole 64 KiB blocks and a tail of 512-byte ones: the exact size, whatever comes after it."""
    path = _toolbox(tmp_path, flavour)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    data = os.urandom(size)  # not a tar: tar fails, the count and hash must still be exact
    tar = scripts.GNU if flavour == "gnu" else scripts.BUSYBOX
    run = _run(scripts.restore_script(size, tar=tar, keep_owners=True), out, scratch, path,
               stdin=data + b"more after the end" * 100)
    report = scripts.parse_report(run.stderr)
    assert (report.size, report.partial_blocks) == (size, 0)
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.tar_exit != 0


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_cut_stream_shows(tmp_path: Path, flavour: str) -> None:
    path = _toolbox(tmp_path, flavour)
    src, out, scratch = tmp_path / "src", tmp_path / "out", tmp_path / "scratch"
    for d in (src, out, scratch):
        d.mkdir()
    (src / "big").write_bytes(os.urandom(3 << 20))
    tar = scripts.GNU if flavour == "gnu" else scripts.BUSYBOX
    stream, report = _out_stream(scripts.backup_script(tar), src, scratch, path)
    restore_script = scripts.restore_script(len(stream), tar=tar, keep_owners=True)
    for cut_at in (len(stream) - 1536, len(stream) - scripts.BIG, 700 * 512):
        cut = scripts.parse_report(_run(restore_script, out, scratch, path, stdin=stream[:cut_at]).stderr)
        assert cut.partial_blocks or cut.size != len(stream), cut_at
        assert cut.sha256 == hashlib.sha256(stream[:cut_at]).hexdigest() != report.sha256


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_empty_volume_is_its_root_alone(tmp_path: Path, flavour: str) -> None:
    path = _toolbox(tmp_path, flavour)
    src, scratch = tmp_path / "src", tmp_path / "scratch"
    (src / "lost+found").mkdir(parents=True)
    scratch.mkdir()
    tar = scripts.GNU if flavour == "gnu" else scripts.BUSYBOX
    stream, report = _out_stream(scripts.backup_script(tar), src, scratch, path)
    reader = TarReader()
    reader.feed(stream)
    archive = reader.finish()
    assert list(archive.members) == [""] and archive.empty and report.tar_exit == 0


def test_probe_and_fix_scripts_quote_hostile_names() -> None:
    text = scripts.remove_script(["it's\n$(reboot)", "-rf"]).decode()
    assert "'/data/it'\"'\"'s\n$(reboot)'" in text and "/data/-rf" in text
    fixes = tree_check.Fixes()
    fixes.touch[-5].append("a b")
    assert "touch -h -c -d @-5 -- '/data/a b'" in scripts.fix_script(fixes, strict=True).decode()
    probe = scripts.parse_probe(b"tar=gnu 1.34\nholes=yes\nuid=1000\ngids=1000 2000\n")
    assert (probe.tar, probe.tar_version, probe.dig_holes, probe.uid, probe.gids) == ("gnu", "1.34", True, 1000,
                                                                                     (1000, 2000))
    assert scripts.parse_probe(b"tar=busybox v1.37.0\nholes=no\nuid=0\ngids=0\n").tar == "busybox"


def test_harmless_tar_messages() -> None:
    assert scripts.harmless_tar_messages("tar: can't open './x': Permission denied\n"
                                         "tar: error exit delayed from previous errors")
    assert scripts.harmless_tar_messages("tar: ./d: Cannot open: Permission denied\n"
                                         "tar: Exiting with failure status due to previous errors")
    assert not scripts.harmless_tar_messages("tar: ./f: File shrank by 10 bytes; padding with zeros")


@pytest.mark.parametrize("tar", [["busybox", "tar", "-c", "-f", "-"], ["tar", "-c", "--format=gnu", "-f", "-"]])
def test_what_tar_says_of_a_directory_the_app_may_not_open_is_left_to_the_listing(tmp_path: Path,
                                                                                   tar: list[str]) -> None:
    # --skip-unreadable skipped such a directory by the listing, then failed on busybox's own words for it.
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "f").write_text("x")
    (tmp_path / "ok").write_text("y")
    for path in (tmp_path / "locked" / "f", tmp_path / "locked", tmp_path / "ok"):
        os.chown(path, 1000, 1000)
    (tmp_path / "locked").chmod(0)
    ran = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", *tar, "--", "./locked",
                          "./ok"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ran.returncode != 0 and "locked" in ran.stderr
    assert scripts.harmless_tar_messages(ran.stderr), ran.stderr
    assert not scripts.harmless_tar_messages("tar: ./f: Read error at byte 0, while reading 512 bytes: "
                                             "Input/output error")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_upload_cut_short_fails_in_the_pod_instead_of_leaving_half_a_script(tmp_path: Path, flavour: str) -> None:
    """`head -c N` (how every upload is bounded) ends early without an error when the stream is cut short: the
    pod counts what it wrote and fails, so half a list of chunks to write or paths to remove is never run."""
    path, data, scratch = _toolbox(tmp_path, flavour), tmp_path / "data", tmp_path / "scratch"
    data.mkdir()
    scratch.mkdir()
    script = b"echo one\necho two\n" * 1000
    upload = scripts.upload_script(f"{scripts.SCRATCH}/job.sh", len(script))
    bounded = f"head -c {len(script)} | {{ {upload}; }}"
    whole = _run(bounded, data, scratch, path, stdin=script + b"what v4 cannot stop sending")
    assert whole.returncode == 0, whole.stderr
    assert (scratch / "job.sh").read_bytes() == script
    short = _run(bounded, data, scratch, path, stdin=script[:-7])
    assert short.returncode != 0
    assert f"{len(script) - 7} of {len(script)} bytes arrived".encode() in short.stderr, short.stderr


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_fixes_an_incremental_restore_predicts_are_set_in_the_exec_that_lists_the_volume(
        tmp_path: Path, flavour: str) -> None:
    """A few files written again as tar writes them (owner root, its own mode, the directory's time moved): the
    predicted fixes, uploaded and run in the listing's own exec (`after_upload`), leave nothing to fix; an
    upload cut short runs nothing and reports no stream."""
    path = _toolbox(tmp_path, flavour)
    vol, scratch = tmp_path / "vol", tmp_path / "scratch"
    scratch.mkdir()
    build_app_tree(vol)
    record_listing = listing.parse(_out_stream(scripts.listing_script(), vol, scratch, path)[0])
    skipped = skipped_by_plan(record_listing, Identity(0, frozenset()))
    reader = TarReader(gnu_sparse=flavour == "gnu")
    reader.feed(_out_stream(scripts.backup_script(scripts.GNU if flavour == "gnu" else scripts.BUSYBOX), vol,
                            scratch, path)[0])
    entries = reconcile(reader.finish(), record_listing, skipped).entries  # the record, as a backup makes it
    written = sorted(p for p, e in entries.items.items() if e.kind == "file" and "/" in p and e.uid != 0)[:2]
    assert written, "the app tree has files of another owner than root in a directory"
    for p in written:  # as tar writes a file it was sent: new inode, root's, mode and time of its own
        target = vol / p
        data = target.read_bytes()
        target.unlink()
        target.write_bytes(data)
        os.chmod(target, 0o666)
    before = {p: f for p, f in record_listing.items() if p not in written}
    rules = tree_check.Rules(sparse=False)
    assert tree_check.compare(entries, listing.parse(_out_stream(scripts.listing_script(), vol, scratch, path)[0]),
                              rules).fixes, "the writes left something to fix"
    job = scripts.fix_script(tree_check.predicted_fixes(entries, before, set(written), rules), strict=False)
    job = job.replace(scripts.DATA.encode(), str(vol).encode())
    combined = scripts.after_upload(f"{scripts.SCRATCH}/job.sh", len(job),
                                    f"sh {scripts.SCRATCH}/job.sh >/dev/null 2>&1 || true\n{scripts.listing_script()}")
    local = combined.replace(scripts.SCRATCH, str(scratch)).replace(scripts.DATA, str(vol))
    bounded = f"head -c {len(job)} | {{ sh -c {shlex.quote(local)}; }}"  # as bounded_input runs it in the pod
    result = subprocess.run(["sh", "-c", bounded], input=job + b"trailing", capture_output=True, env={"PATH": path})
    report = scripts.parse_report(result.stderr)
    assert result.returncode == report.tar_exit == 0, result.stderr
    assert report.sha256 == hashlib.sha256(result.stdout).hexdigest()
    assert tree_check.differences(entries, listing.parse(result.stdout), rules) == []

    short = subprocess.run(["sh", "-c", bounded], input=job[:-10], capture_output=True, env={"PATH": path})
    assert short.returncode == 1 and b"arrived" in short.stderr and scripts.MARKER.encode() not in short.stderr
