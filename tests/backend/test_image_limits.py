"""backend.images: pictures the workflows would get wrong, decode work and decode memory."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from backend.errors import InvalidUpload, RateLimited
from backend.assets.images import (MAX_JPEG_SCANS, DecodeBudget, ImageInfo, decode_cost, decoded, inspect_image,
                            probe_image)

from .image_bombs import scan_bomb

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 36_000_000}


def png_raw(width: int, height: int, depth: int, colour: int, row: bytes) -> bytes:
    """A PNG written by hand (Pillow cannot write every depth/colour combination)."""
    def chunk(cid: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    raw = b"".join(b"\x00" + row for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16_bit_greyscale_is_refused_with_how_to_fix_it() -> None:
    grey16 = png_raw(8, 8, 16, 0, b"\xff\x00" * 8)
    with pytest.raises(InvalidUpload, match="16-bit greyscale") as refused:
        inspect_image(grey16, **LIMITS)
    assert "8-bit" in str(refused.value) and "16 位" in refused.value.zh


@pytest.mark.parametrize(("colour", "channels", "mode"), [(2, 3, "RGB"), (6, 4, "RGBA"), (4, 2, "RGBA")])
def test_other_16_bit_pngs_work_as_8_bit(colour: int, channels: int, mode: str) -> None:
    picture = png_raw(8, 8, 16, colour, b"\x80\x00" * channels * 8)
    assert inspect_image(picture, **LIMITS) == ImageInfo("PNG", 8, 8, mode)
    with Image.open(io.BytesIO(picture)) as im:
        assert im.getpixel((0, 0))[0] == 0x80  # the high byte: the same picture in 8 bits


def test_cmyk_jpeg_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 50, 100, 0)).save(buf, "JPEG")
    with pytest.raises(InvalidUpload, match="CMYK"):
        inspect_image(buf.getvalue(), **LIMITS)


def test_a_jpeg_repeating_one_scan_thousands_of_times_is_refused_before_decoding() -> None:
    bomb = scan_bomb(3000)
    started = time.process_time()
    with pytest.raises(InvalidUpload, match="scans"):
        probe_image(bomb, **LIMITS)
    assert time.process_time() - started < 5  # the walk, not 22 s of decoding (generous: a loaded CI box)


def test_ordinary_progressive_jpegs_pass_and_big_ones_may_have_fewer_scans() -> None:
    assert inspect_image(scan_bomb(0), **LIMITS).format == "JPEG"
    assert inspect_image(scan_bomb(MAX_JPEG_SCANS - 20), **LIMITS).format == "JPEG"
    with pytest.raises(InvalidUpload, match="scans"):
        probe_image(scan_bomb(MAX_JPEG_SCANS), **LIMITS)
    header = probe_image(scan_bomb(30), **LIMITS)
    small_limit = {"max_bytes": LIMITS["max_bytes"], "max_pixels": header.width * header.height}
    with pytest.raises(InvalidUpload, match="at most 20"):  # at the pixel limit: 20 scans at most
        probe_image(scan_bomb(30), **small_limit)


def test_error_texts_name_no_library_internals(caplog: pytest.LogCaptureFixture) -> None:
    row = bytes(range(64)) * 3
    good = png_raw(64, 64, 8, 2, row)
    start = good.index(b"IDAT") + 4
    length = struct.unpack(">I", good[start - 8 : start - 4])[0]
    payload = good[start : start + 2] + bytes(b ^ 0x5A for b in good[start + 2 : start + length])
    chunk = b"IDAT" + payload
    scrambled = good[: start - 4] + chunk + struct.pack(">I", zlib.crc32(chunk)) + good[start + length + 4 :]
    with caplog.at_level("INFO", logger="backend.assets.images"):
        with pytest.raises(InvalidUpload, match="could not be decoded") as refused:
            inspect_image(scrambled, **LIMITS)
    text = str(refused.value) + refused.value.zh
    assert "Error" not in text and "decompress" not in text and "stream" not in text
    assert "decompress" in caplog.text or "stream" in caplog.text  # the detail went to the log


def test_the_budget_makes_large_decodes_wait_their_turn() -> None:
    budget = DecodeBudget(100)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with budget.reserve(80):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(10)
    with pytest.raises(RateLimited, match="busy"):
        with budget.reserve(30, timeout=0.2):
            pass
    with budget.reserve(20, timeout=0.2):  # what still fits goes ahead
        assert budget.used == 100
    release.set()
    holder.join()
    with budget.reserve(10**9, timeout=0.2):  # larger than the budget: alone
        assert budget.used == 100
    assert budget.used == 0


def test_decodes_never_hold_more_than_the_budget_at_once() -> None:
    picture = np.zeros((600, 600, 4), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(picture, "RGBA").save(buf, "PNG")
    data = buf.getvalue()
    cost = decode_cost(probe_image(data, **LIMITS))
    budget = DecodeBudget(cost * 2)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], budget.used)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=inspect_image, args=(data,), kwargs={**LIMITS, "budget": budget})
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert 0 < peak[0] <= cost * 2 and budget.used == 0


def test_decoded_gives_the_checked_pixels() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (20, 10), (1, 2, 3, 4)).save(buf, "PNG")
    with decoded(buf.getvalue(), **LIMITS) as im:
        assert im.size == (20, 10) and im.getpixel((0, 0)) == (1, 2, 3, 4)
    with pytest.raises(InvalidUpload, match="megapixel"):
        with decoded(png_raw(7000, 7000, 1, 0, b"\x00" * 875), **LIMITS):
            pass
