"""The stdin frames our exec layer writes, read back by websocket-client's own frame parser."""

from __future__ import annotations

import os

import pytest
from websocket import ABNF
from websocket._abnf import frame_buffer

from kubectl_dr.kube import exec as kexec


def _parse(wire: bytes) -> ABNF:
    pos = 0

    def recv(n: int) -> bytes:
        nonlocal pos
        chunk = wire[pos : pos + n]
        pos += len(chunk)
        return chunk

    frame = frame_buffer(recv, skip_utf8_validation=True).recv_frame()
    assert pos == len(wire), "the frame must use exactly the bytes written"
    return frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 1 << 20])
def test_frame_round_trips_through_an_independent_parser(size: int) -> None:
    payload = b"\x00" + os.urandom(size)
    wire = kexec._StdinFrame(payload).format()
    frame = _parse(wire)
    assert frame.fin == 1
    assert frame.opcode == ABNF.OPCODE_BINARY
    assert frame.mask_value == 1
    assert frame.data == payload  # the parser unmasked it with the key we wrote


def test_every_frame_gets_a_fresh_key() -> None:
    payload = b"\x00" + b"same bytes" * 100
    keys = {kexec._StdinFrame(payload).format()[4:8] for _ in range(20)}
    assert len(keys) == 20


def test_the_compiled_masking_is_in_use() -> None:
    # Without it a restore pays ~4 CPU-s per GiB in our process; the dependency is declared for this.
    assert kexec._c_mask is not None
