"""Deciding whether uploaded bytes are an image we accept, without trusting them.

Only PNG, JPEG and WEBP are accepted. Checks run cheapest first, so hostile input is
refused before Pillow allocates anything for it:

1. byte size (empty, over the limit);
2. the format, from the leading bytes (anything else is named in the message);
3. a walk over the container structure — PNG chunks with their CRCs, JPEG segments up to
   EOI, WEBP RIFF chunks — which reads the dimensions from the header and finds
   truncation, corruption, oversized metadata and data appended after the image (the
   PNG+ZIP polyglot);
4. the pixel limit on those dimensions, *before* Pillow opens the file; pictures the
   workflows cannot use as they are (16-bit greyscale, CMYK) are refused here too, by
   their header, with a message saying how to re-save them;
5. the work of a decode is bounded: a JPEG may have at most ``MAX_JPEG_SCANS`` scans and
   ``MAX_SCAN_WORK`` scans×megapixels (a progressive JPEG repeating one scan thousands of
   times would otherwise take minutes of CPU), and every decode first reserves its
   memory from the process-wide :data:`DECODE_BUDGET`, so parallel uploads of large
   pictures queue instead of adding up;
6. a decode with Pillow, restricted to the one detected format: PNG and WEBP in full,
   JPEG at 1/8 scale (every entropy-coded byte is still decoded, which is what finds
   corrupt data, without the full-size output buffer).

The pixel limit is ``min(max_pixels, PIL.Image.MAX_IMAGE_PIXELS)``. Pillow warns
(``DecompressionBombWarning``) above its own limit; because ours is never higher and is
checked first, an image that would make Pillow warn has already been refused — the
warning is an error in effect, without touching process-global state (neither
``Image.MAX_IMAGE_PIXELS`` nor the warning filters, which other threads share).
Pillow's own reading of the size is checked again against the same limit before
decoding, in case it disagrees with ours.

This module needs no database: the agent uses it too. Messages never quote Pillow's
exception texts (they name files and internals); the detail goes to the log.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import logging
import math
import mmap
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .blobs import check_size, human_size
from ..errors import InvalidUpload, RateLimited

log = logging.getLogger(__name__)

#: Largest tEXt/zTXt/iTXt/iCCP chunk accepted. Pillow's own cap on decompressed text
#: (``PngImagePlugin.MAX_TEXT_CHUNK``) is the same size; real metadata is far smaller, and
#: a bigger chunk would let a 1×1 "image" carry megabytes of arbitrary data.
MAX_METADATA_CHUNK = 1024 * 1024

#: Chunk/segment count cap, so a file of millions of empty chunks cannot pin a CPU.
MAX_CHUNKS = 100_000

#: Scans a JPEG may have. Encoders write one (baseline) or about ten (progressive;
#: libjpeg's and mozjpeg's scripts stay under 20); each scan is another pass of the
#: decoder over the whole picture.
MAX_JPEG_SCANS = 64
#: Scans × pixels, in multiples of the pixel limit: a picture at the limit may have 20
#: scans, a smaller one more (up to ``MAX_JPEG_SCANS``). About 3 s of one CPU at most.
MAX_SCAN_WORK = 20

#: Bytes of decoded pixels all decodes of this process may hold at once.
DECODE_BUDGET_BYTES = 160 * 1024 * 1024
#: How long a decode waits for its share of the budget before the upload is refused.
DECODE_WAIT_SECONDS = 60.0

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Leading bytes of formats we refuse, named in the rejection message.
_SIGNATURES = (
    (b"GIF87a", "a GIF image", "GIF 图片"),
    (b"GIF89a", "a GIF image", "GIF 图片"),
    (b"BM", "a BMP image", "BMP 图片"),
    (b"II*\x00", "a TIFF image", "TIFF 图片"),
    (b"MM\x00*", "a TIFF image", "TIFF 图片"),
    (b"\x00\x00\x01\x00", "an ICO icon", "ICO 图标"),
    (b"\x00\x00\x02\x00", "a CUR cursor", "CUR 光标"),
    (b"8BPS", "a Photoshop document", "Photoshop 文档"),
    (b"%PDF", "a PDF document", "PDF 文档"),
    (b"PK\x03\x04", "a ZIP archive", "ZIP 压缩包"),
    (b"\x1f\x8b", "a gzip archive", "gzip 压缩包"),
    (b"RIFF", "a RIFF file (WAV/AVI)", "RIFF 文件（WAV/AVI）"),
)
_PNG_METADATA_CHUNKS = {b"tEXt", b"zTXt", b"iTXt", b"iCCP"}
#: PNG colour type -> channels stored (grey, RGB, palette, grey+alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# JPEG start-of-frame markers (SOF0-15 minus DHT C4, JPG C8 and DAC CC): they carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Inside entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or a restart
# marker; anything else is the next real marker.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


@dataclass(frozen=True)
class ImageInfo:
    """What the decode established about an accepted image."""

    format: str  # "PNG", "JPEG" or "WEBP"
    width: int
    height: int
    mode: str  # Pillow mode: "RGB", "RGBA", "L", "P", ...


@dataclass(frozen=True)
class ImageHeader:
    """What the container walk found, before a single pixel was decoded."""

    format: str
    width: int
    height: int
    #: Colour channels the file stores (JPEG components; PNG: 1 grey/palette, 2, 3, 4).
    channels: int = 3
    #: Bits per sample (PNG; 8 for the others).
    bit_depth: int = 8
    #: JPEG scans (1 for baseline; several for progressive or multi-scan files).
    scans: int = 1


class DecodeBudget:
    """The decoded-pixel memory all decodes of a process share.

    A decode reserves what Pillow will allocate for it before it starts and returns it
    when done; a decode that does not fit waits (up to ``DECODE_WAIT_SECONDS``), so ten
    parallel uploads of large pictures cost the memory of one or two at a time. One
    larger than the whole budget waits until it has the budget to itself.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used

    @contextlib.contextmanager
    def reserve(self, nbytes: int, *, timeout: float = DECODE_WAIT_SECONDS) -> Iterator[None]:
        want = min(max(nbytes, 0), self.capacity)
        with self._cond:
            if not self._cond.wait_for(lambda: self._used + want <= self.capacity, timeout):
                raise RateLimited(
                    "The studio is busy checking other pictures. Please try again in a moment.",
                    zh="工作室正在检查其他图片，请稍后再试。",
                    retry_after=5.0,
                )
            self._used += want
        try:
            yield
        finally:
            with self._cond:
                self._used -= want
                self._cond.notify_all()


#: The budget of this process (the studio's uploads and masks, an agent's outputs).
DECODE_BUDGET = DecodeBudget(DECODE_BUDGET_BYTES)

#: glibc's ``M_MMAP_THRESHOLD`` (mallopt) and the size from which allocations are mapped.
_M_MMAP_THRESHOLD = -3
_MMAP_FROM = 128 * 1024


def return_pixel_memory_to_the_system() -> bool:
    """Make a freed decode give its memory back to the system (glibc only; call once at start).

    Pillow allocates pictures in 16 MB blocks. glibc first maps such blocks and unmaps
    them when freed, but after the first unmap it raises its threshold and serves the
    next ones from per-thread heaps, which keep what was freed: four decodes in four
    threads, one after the other under the budget, then left the studio 550 MB larger
    for good. A fixed threshold keeps large blocks mapped, so the budget bounds memory.
    Returns whether the setting took effect.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int,
                  budget: DecodeBudget = DECODE_BUDGET) -> ImageInfo:
    """Check that ``data`` is a complete PNG, JPEG or WEBP within the limits.

    Raises :class:`~backend.errors.InvalidUpload` (English message, ``zh`` Chinese) naming
    the problem and, where one applies, the limit.
    """
    header = probe_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return _decode(io.BytesIO(data), header, _pixel_limit(max_pixels), budget)


def inspect_image_file(path: Path, *, max_bytes: int, max_pixels: int,
                       budget: DecodeBudget = DECODE_BUDGET) -> ImageInfo:
    """:func:`inspect_image` for a file, refusing an oversized one before reading it.

    The file is walked through a read-only memory map and decoded from disk, so its
    bytes are never copied into the heap.
    """
    size = path.stat().st_size
    check_size(size, max_bytes=max_bytes)
    with open(path, "rb") as fh:
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                header = probe_image(view, max_bytes=max_bytes, max_pixels=max_pixels)
            finally:
                view.release()
        fh.seek(0)
        return _decode(fh, header, _pixel_limit(max_pixels), budget)


def probe_image(data: bytes | memoryview, *, max_bytes: int, max_pixels: int) -> ImageHeader:
    """Steps 1–5 of the module docstring: everything short of decoding pixels.

    Cheap whatever the file claims (one pass over its bytes, no allocation for pixels);
    raises :class:`~backend.errors.InvalidUpload` like :func:`inspect_image`.
    """
    check_size(len(data), max_bytes=max_bytes)
    view = memoryview(data)
    try:
        fmt = sniff_format(bytes(view[:2048]))
        if fmt == "PNG":
            header = _png_structure(view)
        elif fmt == "JPEG":
            header = _jpeg_structure(view)
        else:
            header = _webp_structure(view)
    finally:
        view.release()
    limit = _pixel_limit(max_pixels)
    _check_pixels(header.width, header.height, limit)
    _check_kind(header)
    _check_scans(header, limit)
    return header


def sniff_format(data: bytes) -> str:
    """The accepted format ``data`` starts like, or :class:`InvalidUpload` naming what it is."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    kind, kind_zh = _describe(data)
    raise InvalidUpload(
        f"This file is not a PNG, JPEG or WEBP image (it looks like {kind}). "
        "Please upload a PNG, JPEG or WEBP image.",
        zh=f"该文件不是 PNG、JPEG 或 WEBP 图片（看起来是{kind_zh}）。请上传 PNG、JPEG 或 WEBP 图片。",
    )


def _describe(data: bytes) -> tuple[str, str]:
    """English and Chinese names for a format we refuse, so the user learns what they sent."""
    head = data[:16]
    for magic, en, zh in _SIGNATURES:
        if head.startswith(magic):
            return en, zh
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "an AVIF image", "AVIF 图片"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "a HEIC image", "HEIC 图片"
        return "an MP4/MOV video", "MP4/MOV 视频"
    text = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text:
        return "an SVG image", "SVG 图片"
    if b"<html" in text or text.startswith(b"<!doctype html"):
        return "an HTML page", "HTML 网页"
    if text.startswith(b"<?xml"):
        return "an XML document", "XML 文档"
    if b"\x00" not in text:
        try:
            text.decode("utf-8")
            return "a text file", "文本文件"
        except UnicodeDecodeError:
            pass
    return "an unknown file type", "未知类型的文件"


def _damaged(fmt: str, detail: str, zh_detail: str) -> InvalidUpload:
    return InvalidUpload(
        f"The {fmt} file is truncated or damaged ({detail}). Please re-save or re-export it and upload again.",
        zh=f"该 {fmt} 文件不完整或已损坏（{zh_detail}）。请重新保存或导出后再上传。",
    )


def _appended(fmt: str, extra: int) -> InvalidUpload:
    return InvalidUpload(
        f"The {fmt} image is followed by {human_size(extra)} of other data (for example an appended "
        f"archive); only plain images are accepted. Please re-save it as a plain {fmt}.",
        zh=f"该 {fmt} 图片末尾附带了 {human_size(extra)} 的其他数据（例如附加的压缩包），只接受纯图片文件。"
        f"请重新保存为普通 {fmt} 后再上传。",
    )


def _png_structure(data: memoryview) -> ImageHeader:
    """Walk every chunk: IHDR first, CRCs right, small metadata, IEND last and final."""
    pos, size, count = 8, len(data), 0
    width = height = depth = colour = 0
    while True:
        if pos + 8 > size:
            raise _damaged("PNG", "it ends before the IEND chunk", "在 IEND 块之前就结束了")
        length, cid = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > size:
            raise _damaged("PNG", f"the {_chunk_name(cid)} chunk runs past the end of the file", "数据块超出文件末尾")
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise _damaged("PNG", f"the {_chunk_name(cid)} chunk fails its CRC check", "数据块校验和（CRC）错误")
        count += 1
        if count == 1:
            if cid != b"IHDR" or length != 13:
                raise _damaged("PNG", "the first chunk is not IHDR", "第一个数据块不是 IHDR")
            width, height, depth, colour = struct.unpack_from(">IIBB", data, pos + 8)
        elif count > MAX_CHUNKS:
            raise _damaged("PNG", f"more than {MAX_CHUNKS} chunks", f"数据块超过 {MAX_CHUNKS} 个")
        if cid in _PNG_METADATA_CHUNKS and length > MAX_METADATA_CHUNK:
            name = _chunk_name(cid)
            raise InvalidUpload(
                f"The PNG carries a {human_size(length)} {name} metadata chunk; metadata chunks may be at "
                f"most {human_size(MAX_METADATA_CHUNK)}. Please re-save the image without the extra metadata.",
                zh=f"该 PNG 含有 {human_size(length)} 的 {name} 元数据块，元数据块最大为 "
                f"{human_size(MAX_METADATA_CHUNK)}。请去掉多余元数据后重新保存。",
            )
        pos = end
        if cid == b"IEND":
            break
    if pos < size:
        raise _appended("PNG", size - pos)
    return ImageHeader("PNG", width, height, channels=_PNG_CHANNELS.get(colour, 3), bit_depth=depth)


def _chunk_name(cid: bytes) -> str:
    return cid.decode("latin-1") if cid.isalpha() else repr(cid)


def _jpeg_structure(data: memoryview) -> ImageHeader:
    """Walk the segments and scans up to EOI; the largest frame declared and the scan count."""
    pos, size, count = 2, len(data), 0
    width = height = components = scans = 0
    while True:
        count += 1
        if count > MAX_CHUNKS:
            raise _damaged("JPEG", f"more than {MAX_CHUNKS} segments", f"数据段超过 {MAX_CHUNKS} 个")
        while pos + 2 < size and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes may precede a marker
        if pos + 2 > size:
            raise _damaged("JPEG", "it ends before the end-of-image marker", "在图像结束标记之前就结束了")
        if data[pos] != 0xFF:
            raise _damaged("JPEG", f"no marker at byte {pos}", f"第 {pos} 字节处缺少标记")
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            pos += 2
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        if pos + 4 > size:
            raise _damaged("JPEG", "a segment header is cut off", "数据段头不完整")
        length = struct.unpack_from(">H", data, pos + 2)[0]
        end = pos + 2 + length
        if length < 2 or end > size:
            raise _damaged("JPEG", "a segment runs past the end of the file", "数据段超出文件末尾")
        if marker in _JPEG_SOF:
            if length < 8:
                raise _damaged("JPEG", "the frame header is too short", "帧头过短")
            h, w, n = struct.unpack_from(">HHB", data, pos + 5)
            if w * h >= width * height:
                width, height, components = w, h, n
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data follows until the next marker
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise _too_many_scans(scans, MAX_JPEG_SCANS)
            found = _JPEG_NEXT_MARKER.search(data, pos)
            if found is None:
                raise _damaged("JPEG", "the image data is cut off", "图像数据被截断")
            pos = found.start()
    if width == 0 or height == 0:
        raise _damaged("JPEG", "it has no frame header", "缺少帧头")
    extra = bytes(data[pos:])
    # Phones append further JPEGs after EOI (MPF depth/gain maps, Ultra HDR) and some
    # cameras pad with zeros; both are ordinary photos. Anything else is refused.
    if extra and not extra.startswith(b"\xff\xd8") and extra.strip(b"\x00"):
        raise _appended("JPEG", len(extra))
    return ImageHeader("JPEG", width, height, channels=components, scans=max(scans, 1))


def _webp_structure(data: memoryview) -> ImageHeader:
    """Check the RIFF length against the file and walk the chunks; size from the first."""
    size = len(data)
    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    if riff_end > size:
        raise _damaged("WEBP", "the file is shorter than its RIFF header says", "文件比 RIFF 头声明的短")
    if riff_end < size:
        raise _appended("WEBP", size - riff_end)
    pos, count = 12, 0
    width = height = 0
    while pos < riff_end:
        count += 1
        if count > MAX_CHUNKS:
            raise _damaged("WEBP", f"more than {MAX_CHUNKS} chunks", f"数据块超过 {MAX_CHUNKS} 个")
        if pos + 8 > riff_end:
            raise _damaged("WEBP", "a chunk header is cut off", "数据块头不完整")
        fourcc, length = struct.unpack_from("<4sI", data, pos)
        payload = pos + 8
        if payload + length > riff_end:
            raise _damaged("WEBP", f"the {_chunk_name(fourcc)} chunk runs past the end", "数据块超出文件末尾")
        if count == 1:
            width, height = _webp_canvas(data, fourcc, payload, length)
        pos = payload + length + (length & 1)  # chunks are padded to an even length
    if count == 0:
        raise _damaged("WEBP", "it has no image chunk", "缺少图像数据块")
    return ImageHeader("WEBP", width, height, channels=4)


def _webp_canvas(data: memoryview, fourcc: bytes, pos: int, length: int) -> tuple[int, int]:
    if fourcc == b"VP8X" and length >= 10:
        w = int.from_bytes(data[pos + 4 : pos + 7], "little") + 1
        h = int.from_bytes(data[pos + 7 : pos + 10], "little") + 1
        return w, h
    if fourcc == b"VP8L" and length >= 5 and data[pos] == 0x2F:
        bits = int.from_bytes(data[pos + 1 : pos + 5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if fourcc == b"VP8 " and length >= 10 and bytes(data[pos + 3 : pos + 6]) == b"\x9d\x01\x2a":
        w, h = struct.unpack_from("<HH", data, pos + 6)
        return w & 0x3FFF, h & 0x3FFF
    raise _damaged("WEBP", f"the first chunk {_chunk_name(fourcc)} is not a valid image header", "第一个数据块不是有效的图像头")


def _pixel_limit(max_pixels: int) -> int:
    # Read, never write, Pillow's global: see the module docstring.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow_limit is None else min(max_pixels, int(pillow_limit))


def _check_pixels(width: int, height: int, limit: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidUpload(
            f"The image declares a size of {width}×{height} pixels, which is not a real image.",
            zh=f"该图片声明的尺寸为 {width}×{height} 像素，不是有效图片。",
        )
    if width * height > limit:
        mp, limit_mp = width * height / 1e6, limit / 1e6
        raise InvalidUpload(
            f"The image is {width}×{height} pixels ({mp:.1f} megapixels), more than the "
            f"{limit_mp:.1f}-megapixel limit. Please scale it down and upload again.",
            zh=f"该图片为 {width}×{height} 像素（{mp:.1f} 百万像素），超过了 {limit_mp:.1f} 百万像素的上限。"
            "请缩小后再上传。",
        )


def _check_kind(header: ImageHeader) -> None:
    """Refuse pictures the workflows would silently get wrong, by their header.

    ComfyUI turns every input into 8-bit RGB: a 16-bit greyscale PNG (Pillow's ``I;16``)
    is clipped to white on the way, and CMYK/YCCK JPEGs (print files) get a naive
    conversion with wrong colours. Other 16-bit PNGs are fine: Pillow reads them as 8 bits.
    """
    if header.format == "PNG" and header.channels == 1 and header.bit_depth == 16:
        raise InvalidUpload(
            "This is a 16-bit greyscale PNG; the workflows need 8 bits per channel and would turn it "
            "white. Please save it as an 8-bit PNG or a JPEG and upload again.",
            zh="这是一张 16 位灰度 PNG，工作流需要每通道 8 位，否则图片会变成白色。请另存为 8 位 PNG 或 JPEG 后再上传。",
        )
    if header.format == "JPEG" and header.channels not in (1, 3):
        raise InvalidUpload(
            f"This JPEG stores {header.channels} colour channels (CMYK, a print format); the workflows "
            "need RGB colours. Please convert it to RGB (for example 'Export as sRGB JPEG') and upload again.",
            zh=f"该 JPEG 含有 {header.channels} 个颜色通道（CMYK 印刷格式），工作流需要 RGB 颜色。"
            "请转换为 RGB（例如“导出为 sRGB JPEG”）后再上传。",
        )


def _check_scans(header: ImageHeader, limit: int) -> None:
    work = header.scans * header.width * header.height
    if header.scans > 1 and work > MAX_SCAN_WORK * limit:
        allowed = max(1, min(MAX_JPEG_SCANS, MAX_SCAN_WORK * limit // (header.width * header.height)))
        raise _too_many_scans(header.scans, allowed)


def _too_many_scans(scans: int, allowed: int) -> InvalidUpload:
    return InvalidUpload(
        f"This JPEG has {scans} or more scans; at its size at most {allowed} are accepted (ordinary "
        "progressive JPEGs have about ten). Please re-save it as a baseline JPEG and upload again.",
        zh=f"该 JPEG 含有至少 {scans} 个扫描段，按其尺寸最多接受 {allowed} 个（普通渐进式 JPEG 约十个）。"
        "请另存为基线（baseline）JPEG 后再上传。",
    )


#: JPEGs are checked at this fraction of their size (libjpeg's DCT scaling).
_JPEG_SCALE = 8


def decode_cost(header: ImageHeader, *, full: bool = False) -> int:
    """Bytes Pillow allocates to decode ``header``'s picture: for the check (JPEGs at
    1/8 scale), or ``full`` size for code that needs every pixel."""
    pixels = header.width * header.height
    if header.format == "JPEG":
        if full:
            output = pixels * 4
        else:
            output = math.ceil(header.width / _JPEG_SCALE) * math.ceil(header.height / _JPEG_SCALE) * 4
        # A file of several scans is decoded from a buffer of every DCT coefficient
        # (2 bytes per sample and component), whatever the output scale.
        return output + (pixels * header.channels * 2 if header.scans > 1 else 0)
    # Pillow keeps one byte per pixel for grey and palette pictures, four otherwise.
    return pixels * (1 if header.channels == 1 and header.bit_depth <= 8 else 4)


@contextlib.contextmanager
def decoded(data: bytes, *, max_bytes: int, max_pixels: int, extra_bytes: int = 0,
            budget: DecodeBudget = DECODE_BUDGET) -> Iterator[Image.Image]:
    """The picture in ``data``, checked like :func:`inspect_image` and decoded in full.

    For code that needs the pixels (a mask's painted area). The decode budget covers the
    picture plus ``extra_bytes`` the caller allocates inside the ``with`` block.
    """
    header = probe_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    limit = _pixel_limit(max_pixels)
    with budget.reserve(decode_cost(header, full=True) + extra_bytes):
        with _pillow_errors(header.format, limit):
            im = Image.open(io.BytesIO(data), formats=[header.format])
            _check_pixels(im.width, im.height, limit)
            im.load()
        try:
            yield im
        finally:
            im.close()


def _decode(source: io.BytesIO | io.BufferedReader, header: ImageHeader, limit: int, budget: DecodeBudget) -> ImageInfo:
    fmt = header.format
    with budget.reserve(decode_cost(header)), _pillow_errors(fmt, limit):
        with Image.open(source, formats=[fmt]) as im:
            _check_pixels(im.width, im.height, limit)
            info = ImageInfo(format=fmt, width=im.width, height=im.height, mode=im.mode)
            if fmt == "JPEG":
                im.draft(im.mode, (math.ceil(im.width / _JPEG_SCALE), math.ceil(im.height / _JPEG_SCALE)))
            im.load()  # the decode: this is what finds truncated or corrupt pixel data
            return info


@contextlib.contextmanager
def _pillow_errors(fmt: str, limit: int) -> Iterator[None]:
    """Pillow's failures as :class:`InvalidUpload`; its texts (which name internals) to the log."""
    try:
        yield
    except InvalidUpload:
        raise
    except Image.DecompressionBombError:
        # Only reachable if Pillow reads a larger size than our header walk did.
        raise InvalidUpload(
            f"The image is larger than the {limit / 1e6:.1f}-megapixel limit.",
            zh=f"该图片超过了 {limit / 1e6:.1f} 百万像素的上限。",
        ) from None
    except Exception as exc:  # noqa: BLE001
        # Pillow reports broken input through many types (OSError, SyntaxError, ValueError,
        # EOFError, struct.error, ...). Whatever the type, the bytes are not a usable image.
        log.info("a %s image could not be decoded: %s: %s", fmt, type(exc).__name__, exc)
        raise InvalidUpload(
            f"The {fmt} image could not be decoded: its picture data is damaged. "
            "Please re-save it and upload again.",
            zh=f"无法解码该 {fmt} 图片：图像数据已损坏。请重新保存后再上传。",
        ) from None
