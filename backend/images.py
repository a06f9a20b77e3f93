"""Deciding whether uploaded bytes are an image we accept, without trusting them.

Only PNG, JPEG and WEBP are accepted. Checks run cheapest first, so hostile input is
refused before Pillow allocates anything for it:

1. byte size (empty, over the limit);
2. the format, from the leading bytes (anything else is named in the message);
3. a walk over the container structure — PNG chunks with their CRCs, JPEG segments up to
   EOI, WEBP RIFF chunks — which reads the dimensions from the header and finds
   truncation, corruption, oversized metadata and data appended after the image (the
   PNG+ZIP polyglot);
4. the pixel limit on those dimensions, *before* Pillow opens the file;
5. a full decode with Pillow, restricted to the one detected format.

The pixel limit is ``min(max_pixels, PIL.Image.MAX_IMAGE_PIXELS)``. Pillow warns
(``DecompressionBombWarning``) above its own limit; because ours is never higher and is
checked first, an image that would make Pillow warn has already been refused — the
warning is an error in effect, without touching process-global state (neither
``Image.MAX_IMAGE_PIXELS`` nor the warning filters, which other threads share).
Pillow's own reading of the size is checked again against the same limit before
decoding, in case it disagrees with ours.

This module needs no database: the agent uses it too.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .blobs import check_size, human_size
from .errors import InvalidUpload

#: Largest tEXt/zTXt/iTXt/iCCP chunk accepted. Pillow's own cap on decompressed text
#: (``PngImagePlugin.MAX_TEXT_CHUNK``) is the same size; real metadata is far smaller, and
#: a bigger chunk would let a 1×1 "image" carry megabytes of arbitrary data.
MAX_METADATA_CHUNK = 1024 * 1024

#: Chunk/segment count cap, so a file of millions of empty chunks cannot pin a CPU.
MAX_CHUNKS = 100_000

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
    mode: str  # Pillow mode: "RGB", "RGBA", "L", "P", "CMYK", ...


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Check that ``data`` is a complete PNG, JPEG or WEBP within the limits.

    Raises :class:`~backend.errors.InvalidUpload` (English message, ``zh`` Chinese) naming
    the problem and, where one applies, the limit.
    """
    check_size(len(data), max_bytes=max_bytes)
    fmt = sniff_format(data)
    view = memoryview(data)
    if fmt == "PNG":
        width, height = _png_structure(view)
    elif fmt == "JPEG":
        width, height = _jpeg_structure(view)
    else:
        width, height = _webp_structure(view)
    limit = _pixel_limit(max_pixels)
    _check_pixels(width, height, limit)
    return _decode(data, fmt, limit)


def inspect_image_file(path: Path, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """:func:`inspect_image` for a file, refusing an oversized one before reading it."""
    check_size(path.stat().st_size, max_bytes=max_bytes)
    return inspect_image(path.read_bytes(), max_bytes=max_bytes, max_pixels=max_pixels)


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


def _png_structure(data: memoryview) -> tuple[int, int]:
    """Walk every chunk: IHDR first, CRCs right, small metadata, IEND last and final."""
    pos, size, count = 8, len(data), 0
    width = height = 0
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
            width, height = struct.unpack_from(">II", data, pos + 8)
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
    return width, height


def _chunk_name(cid: bytes) -> str:
    return cid.decode("latin-1") if cid.isalpha() else repr(cid)


def _jpeg_structure(data: memoryview) -> tuple[int, int]:
    """Walk the segments and scans up to EOI; return the largest frame size declared."""
    pos, size, count = 2, len(data), 0
    width = height = 0
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
            h, w = struct.unpack_from(">HH", data, pos + 5)
            if w * h >= width * height:
                width, height = w, h
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data follows until the next marker
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
    return width, height


def _webp_structure(data: memoryview) -> tuple[int, int]:
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
    return width, height


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


def _decode(data: bytes, fmt: str, limit: int) -> ImageInfo:
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            _check_pixels(im.width, im.height, limit)
            im.load()  # the full decode: this is what finds truncated or corrupt pixel data
            return ImageInfo(format=fmt, width=im.width, height=im.height, mode=im.mode)
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
        raise InvalidUpload(
            f"The {fmt} image could not be decoded ({exc}). Please re-save it and upload again.",
            zh=f"无法解码该 {fmt} 图片（{exc}）。请重新保存后再上传。",
        ) from None
