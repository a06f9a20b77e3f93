"""Hostile pictures made with real Pillow and byte surgery, shared by the image tests and
the attacks on a running studio (tests/security)."""

from __future__ import annotations

import io
import struct

from PIL import Image


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of every segment; a scan runs to the next marker."""
    pos, out = 2, []
    while pos < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7:
                    break
                end += 1
        out.append((marker, pos, end))
        pos = end
    return out


def scan_bomb(repeats: int, size: tuple[int, int] = (512, 512)) -> bytes:
    """A small progressive JPEG whose last scan is repeated ``repeats`` times: a few bytes
    each (a flat picture's refinement scan), but one pass of the decoder over every block."""
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    _, start, end = [s for s in jpeg_segments(data) if s[0] == 0xDA][-1]
    return data[:end] + data[start:end] * repeats + data[end:]
