"""Our exec layer's frames: stdin frames read back by websocket-client's parser, server frames built by
websocket-client read by ours over a real socket pair."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from websocket import ABNF, WebSocketConnectionClosedException
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


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 65534, 65535, 65536, 1 << 20])
@pytest.mark.parametrize("compiled", [True, False])
def test_frame_round_trips_through_an_independent_parser(size: int, compiled: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if not compiled:  # the fallback for platforms without websockets' compiled routine
        monkeypatch.setattr(kexec, "_c_mask", None)
    data = os.urandom(size)
    payload = b"\x00" + data
    head, body = kexec.client_frame(memoryview(data))
    frame = _parse(head + body)
    assert frame.fin == 1
    assert frame.opcode == ABNF.OPCODE_BINARY
    assert frame.mask_value == 1
    assert frame.data == payload  # the parser unmasked it with the key we wrote


def test_every_frame_gets_a_fresh_key() -> None:
    keys = {kexec.client_frame(b"same bytes" * 100)[0][4:8] for _ in range(20)}
    assert len(keys) == 20


def test_the_compiled_masking_is_in_use() -> None:
    # Without it a restore pays ~4 CPU-s per GiB in our process; the dependency is declared for this.
    assert kexec._c_mask is not None


def _server_frame(payload: bytes, opcode: int = ABNF.OPCODE_BINARY, *, fin: int = 1, mask: int = 0) -> bytes:
    """A frame as a server writes it, built by websocket-client (servers do not mask; masked is allowed)."""
    frame = ABNF(fin=fin, opcode=opcode, mask_value=mask, data=payload)
    return bytes(frame.format())


def test_reader_cuts_messages_from_a_real_socket() -> None:
    big = b"\x01" + os.urandom(200_000)  # longer than one read: arrives in pieces
    wire = (_server_frame(b"\x01hello") + _server_frame(big)
            + _server_frame(b"\x02par", fin=0) + _server_frame(b"ping!", ABNF.OPCODE_PING)
            + _server_frame(b"ts of a", ABNF.OPCODE_CONT, fin=0)
            + _server_frame(b" message", ABNF.OPCODE_CONT, mask=1)
            + _server_frame(b"", ABNF.OPCODE_PING) + _server_frame(b"\x03{}")
            + _server_frame(b"\x03\xe8", ABNF.OPCODE_CLOSE))
    ours, theirs = socket.socketpair()
    writer = threading.Thread(target=lambda: (theirs.sendall(wire), theirs.close()))
    writer.start()
    pongs: list[bytes] = []
    reader = kexec._FrameReader(kexec._Wire(ours, None), pongs.append)
    got = [reader.message() for _ in range(5)]
    writer.join()
    assert got == [(ABNF.OPCODE_BINARY, b"\x01hello"), (ABNF.OPCODE_BINARY, big),
                   (ABNF.OPCODE_BINARY, b"\x02parts of a message"), (ABNF.OPCODE_PING, b""),
                   (ABNF.OPCODE_BINARY, b"\x03{}")]
    assert pongs == [b"ping!"]  # the ping between fragments is answered by the reader itself
    assert reader.message() == (ABNF.OPCODE_CLOSE, b"\x03\xe8")
    with pytest.raises(WebSocketConnectionClosedException):
        reader.message()
    ours.close()
