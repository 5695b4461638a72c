"""Compression on the link: the pod scripts with busybox's gzip and xz, our encoder and decoder, `auto`.

The count and SHA-256 both sides compare are those of the tar stream, compressed or not; a restore's
decoder must end even when stdin never closes (v4 exec); a damaged compressed stream must show as a
difference of size or digest, or as an error of our decoder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from kubectl_dr.errors import UsageError, VerificationError
from kubectl_dr.volumes import compression, scripts
from tests.datasets import build_app_tree, differences, snapshot
from tests.unit.test_volumes_scripts import APPLETS, BUSYBOX, _local, _run

METHODS = [compression.GZIP, compression.XZ]


def _busybox(tmp_path: Path) -> str:
    if not Path(BUSYBOX).exists():
        pytest.skip(f"{BUSYBOX} not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in (*APPLETS, "gzip", "xz", "kill"):
        (bin_dir / applet).symlink_to(BUSYBOX)
    return str(bin_dir)


def _tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, out, scratch = tmp_path / "src", tmp_path / "out", tmp_path / "scratch"
    for d in (out, scratch):
        d.mkdir()
    build_app_tree(src)
    (src / "text.log").write_bytes(b"GET /index.html 200 1532 0.004\n" * 40_000)  # compresses well
    (src / "noise.bin").write_bytes(os.urandom(300_000))
    return src, out, scratch


def _decode(stream: bytes, piece: int = 70_000) -> bytes:
    out = bytearray()
    decoder = compression.Decoder(out.extend)
    for start in range(0, len(stream), piece):
        decoder.feed(stream[start:start + piece])
    decoder.finish()
    return bytes(out)


def test_backup_gzips_after_the_count_and_the_hash(tmp_path: Path) -> None:
    path = _busybox(tmp_path)
    src, _, scratch = _tree(tmp_path)
    plain = _run(scripts.backup_script(scripts.BUSYBOX), src, scratch, path)
    gzipped = _run(scripts.backup_script(scripts.BUSYBOX, compression.GZIP), src, scratch, path)
    report = scripts.parse_report(gzipped.stderr)
    data = _decode(gzipped.stdout)
    assert len(gzipped.stdout) < len(data) / 2, "the text compresses"
    assert (report.size, report.partial_blocks, report.tar_exit) == (len(data), 0, 0)
    assert report.sha256 == hashlib.sha256(data).hexdigest(), "the hash is the tar stream's, not gzip's"
    assert scripts.parse_report(plain.stderr).size == len(data)


@pytest.mark.parametrize("method", METHODS)
def test_restore_decompresses_in_the_pod_and_checks_the_tar_stream(tmp_path: Path, method: str) -> None:
    path = _busybox(tmp_path)
    src, out, scratch = _tree(tmp_path)
    stream = _run(scripts.backup_script(scripts.BUSYBOX), src, scratch, path).stdout
    wire = [0]
    packed = b"".join(compression.compressed([stream[i:i + 100_000] for i in range(0, len(stream), 100_000)],
                                             method, wire, piece=50_000))
    assert wire[0] == len(packed) < len(stream) / 2
    script = scripts.restore_script(len(stream), tar=scripts.BUSYBOX, keep_owners=True, compress=method)
    run = _run(script, out, scratch, path, stdin=packed)
    report = scripts.parse_report(run.stderr)
    assert (report.size, report.partial_blocks, report.tar_exit) == (len(stream), 0, 0), run.stderr
    assert report.sha256 == hashlib.sha256(stream).hexdigest()
    before = {k: v for k, v in snapshot(src).items() if not k.startswith(b"lost+found")}
    after = snapshot(out)
    # Owners, modes and times tar cannot give back are the fixes' job (test_volumes_scripts): the
    # contents must be whole.
    assert {k: v for k, v in after.items() if k in before}.keys() == before.keys()
    assert (out / "text.log").read_bytes() == (src / "text.log").read_bytes()
    assert (out / "noise.bin").read_bytes() == (src / "noise.bin").read_bytes()
    assert differences({b"text.log": before[b"text.log"]}, {b"text.log": after[b"text.log"]}) == []


@pytest.mark.parametrize("method", METHODS)
def test_restore_ends_when_stdin_never_closes(tmp_path: Path, method: str) -> None:
    """v4 exec cannot close stdin: the decoder would wait for more input for ever; the script ends it."""
    path = _busybox(tmp_path)
    src, out, scratch = _tree(tmp_path)
    stream = _run(scripts.backup_script(scripts.BUSYBOX), src, scratch, path).stdout
    packed = b"".join(compression.compressed([stream], method))
    script = scripts.restore_script(len(stream), tar=scripts.BUSYBOX, keep_owners=True, compress=method)
    proc = subprocess.Popen(_local(script, out, scratch), stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": path})
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(packed)
    proc.stdin.flush()  # and left open
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert proc.returncode == 0, "the restore ended by itself with stdin still open"
        report = scripts.parse_report(proc.stderr.read())
        assert (report.size, report.sha256) == (len(stream), hashlib.sha256(stream).hexdigest())
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("method", METHODS)
def test_a_damaged_compressed_stream_shows_in_the_count_or_the_hash(tmp_path: Path, method: str) -> None:
    path = _busybox(tmp_path)
    src, out, scratch = _tree(tmp_path)
    stream = _run(scripts.backup_script(scripts.BUSYBOX), src, scratch, path).stdout
    packed = bytearray(b"".join(compression.compressed([stream], method)))
    script = scripts.restore_script(len(stream), tar=scripts.BUSYBOX, keep_owners=True, compress=method)
    for damage in ("flip", "cut"):
        damaged = bytes(packed[: len(packed) * 2 // 3]) if damage == "cut" else bytes(packed)
        if damage == "flip":
            middle = len(packed) // 2
            damaged = damaged[:middle] + bytes([damaged[middle] ^ 0x55]) + damaged[middle + 1:]
        report = scripts.parse_report(_run(script, out, scratch, path, stdin=damaged).stderr)
        assert (report.size, report.partial_blocks, report.sha256) != (
            len(stream), 0, hashlib.sha256(stream).hexdigest()), damage


def test_our_decoder_refuses_cut_damaged_and_trailing_streams() -> None:
    data = b"a line of a database dump\n" * 50_000
    packed = b"".join(compression.compressed([data], compression.GZIP))
    assert _decode(packed) == data
    with pytest.raises(VerificationError, match="cut short"):
        _decode(packed[:-20])
    with pytest.raises(VerificationError, match="after its end"):
        _decode(packed + b"\0" * 10)
    flipped = bytearray(packed)
    flipped[len(packed) // 2] ^= 0xFF
    with pytest.raises(VerificationError, match=r"damaged|cut short"):
        _decode(bytes(flipped))


def test_the_decoder_hands_over_bounded_pieces() -> None:
    """A frame of compressed zeros can stand for many MiB: each piece is at most OUT bytes."""
    packed = b"".join(compression.compressed([bytes(64 << 20)], compression.GZIP))
    sizes: list[int] = []
    decoder = compression.Decoder(lambda piece: sizes.append(len(piece)))
    decoder.feed(packed)
    decoder.finish()
    assert sum(sizes) == 64 << 20
    assert max(sizes) <= compression.OUT


def test_auto_compresses_only_on_a_slow_link_and_data_that_shrinks() -> None:
    slow, fast = 12.5e6, 400e6
    assert compression.choose(compression.AUTO, slow).method == compression.GZIP
    assert compression.choose(compression.AUTO, fast).method == compression.NONE
    assert compression.choose(compression.AUTO, slow, ratio=0.99).method == compression.NONE
    assert compression.choose(compression.AUTO, slow, ratio=0.3).method == compression.GZIP
    assert compression.choose(compression.AUTO, None).method == compression.NONE
    assert compression.choose(compression.XZ, fast).method == compression.XZ, "as asked, whatever the link"
    recorded = compression.choose(compression.AUTO, slow).to_dict()
    assert recorded["method"] == "gzip" and recorded["requested"] == "auto" and recorded["linkBytesPerSecond"]


def test_xz_is_for_restores_only() -> None:
    assert compression.check("xz", compression.RESTORE_METHODS) == "xz"
    with pytest.raises(UsageError, match="--compress takes one of auto, none, gzip"):
        compression.check("xz", compression.BACKUP_METHODS)


def test_samples_tell_text_from_noise(tmp_path: Path) -> None:
    text, noise = tmp_path / "text", tmp_path / "noise"
    text.write_bytes(b"INSERT INTO orders VALUES (1, 'pending', 12.50);\n" * 200_000)
    noise.write_bytes(os.urandom(6 << 20))
    assert compression.sample_ratio(text, text.stat().st_size) < 0.2
    assert compression.sample_ratio(noise, noise.stat().st_size) > 0.99


def test_the_pods_sample_tells_text_from_noise(tmp_path: Path) -> None:
    path = _busybox(tmp_path)
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    for d in (data, scratch):
        d.mkdir()
    (data / "dump with space.sql").write_bytes(b"INSERT INTO t VALUES (1, 'x');\n" * 100_000)
    (data / "noise").write_bytes(os.urandom(2 << 20))
    for files, low, high in ((["dump with space.sql"], 0.0, 0.2), (["noise"], 0.99, 1.01)):
        out = _run(scripts.sample_script(files, compression.SAMPLE), data, scratch, path).stdout.split()
        raw, packed = int(out[0]), int(out[1])
        assert raw == compression.SAMPLE and low < packed / raw < high
    assert not (scratch / "sample").exists()
