"""backend.assets.images against real Pillow: good images pass, the bad-image corpus is refused."""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

import pytest
from PIL import Image

from backend.errors import InvalidUpload
from backend.assets.images import ImageInfo, inspect_image, inspect_image_file

from .fixtures.images import CORPUS_MAX_BYTES, CORPUS_MAX_PIXELS, BadFile, bad_corpus, encode

LIMITS = {"max_bytes": CORPUS_MAX_BYTES, "max_pixels": CORPUS_MAX_PIXELS}


@pytest.mark.parametrize("bad", bad_corpus(), ids=lambda b: b.name)
def test_bad_file_is_refused_with_a_message_naming_the_problem(bad: BadFile) -> None:
    with warnings.catch_warnings():
        # Refusing must never go through Pillow's bomb *warning*: we refuse first.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InvalidUpload) as caught:
            inspect_image(bad.data, **LIMITS)
    message = str(caught.value).lower()
    for fragment in bad.expect:
        assert fragment.lower() in message, message
    assert caught.value.zh != caught.value.message
    assert any("\u4e00" <= ch <= "\u9fff" for ch in caught.value.zh)


@pytest.mark.parametrize(
    ("fmt", "mode", "params", "decoded_mode"),
    [
        ("PNG", "RGB", {}, "RGB"),
        ("PNG", "RGBA", {}, "RGBA"),
        ("PNG", "L", {}, "L"),
        ("PNG", "P", {}, "P"),
        ("JPEG", "RGB", {}, "RGB"),
        ("JPEG", "RGB", {"progressive": True}, "RGB"),
        ("JPEG", "L", {}, "L"),
        ("WEBP", "RGB", {}, "RGB"),
        ("WEBP", "RGB", {"lossless": True}, "RGB"),
    ],
)
def test_good_images_are_accepted_with_format_size_and_mode(fmt: str, mode: str, params: dict, decoded_mode: str) -> None:
    info = inspect_image(encode(fmt, (123, 45), mode, **params), **LIMITS)
    assert info == ImageInfo(fmt, 123, 45, decoded_mode)


def test_webp_with_alpha_is_accepted() -> None:
    im = Image.new("RGBA", (30, 20), (255, 0, 0, 128))
    buf = io.BytesIO()
    im.save(buf, format="WEBP", lossless=True)
    assert inspect_image(buf.getvalue(), **LIMITS) == ImageInfo("WEBP", 30, 20, "RGBA")


def test_exif_and_metadata_under_the_cap_are_fine() -> None:
    exif = Image.Exif()
    exif[0x010E] = "a description " * 100  # ImageDescription
    assert inspect_image(encode("JPEG", exif=exif), **LIMITS).format == "JPEG"
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", "a prompt, " * 5000, zip=True)  # what SD front-ends write
    assert inspect_image(encode("PNG", pnginfo=meta), **LIMITS).format == "PNG"


def test_jpeg_followed_by_another_jpeg_or_padding_is_a_normal_photo() -> None:
    # Multi-picture files (depth/gain maps, Ultra HDR) put a second JPEG after EOI.
    photo = encode("JPEG")
    assert inspect_image(photo + encode("JPEG", (16, 16)), **LIMITS).width == 64
    assert inspect_image(photo + b"\x00" * 300, **LIMITS).width == 64


def test_limits_are_inclusive() -> None:
    data = encode("PNG", (100, 30))
    assert inspect_image(data, max_bytes=len(data), max_pixels=3000) == ImageInfo("PNG", 100, 30, "RGB")
    with pytest.raises(InvalidUpload, match="megapixel limit"):
        inspect_image(data, max_bytes=len(data), max_pixels=2999)
    with pytest.raises(InvalidUpload, match="upload limit"):
        inspect_image(data, max_bytes=len(data) - 1, max_pixels=3000)


def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    with huge.open("wb") as fh:
        fh.truncate(50 * 1024**3)  # sparse: reading it would take minutes and 50 GiB
    with pytest.raises(InvalidUpload, match="upload limit"):
        inspect_image_file(huge, **LIMITS)


def test_pillow_global_limit_is_only_read() -> None:
    before = Image.MAX_IMAGE_PIXELS
    inspect_image(encode("PNG"), max_bytes=CORPUS_MAX_BYTES, max_pixels=10**12)
    assert Image.MAX_IMAGE_PIXELS == before


def test_limit_never_exceeds_pillows_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # A generous operator setting still cannot take an image past Pillow's bomb threshold.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InvalidUpload, match="0.0-megapixel limit"):
        inspect_image(encode("PNG", (100, 100)), max_bytes=CORPUS_MAX_BYTES, max_pixels=10**9)


def test_concurrent_calls_with_different_limits_do_not_interfere() -> None:
    data = encode("WEBP", (200, 100))
    outcomes: dict[int, list[bool]] = {20_000: [], 19_999: []}

    def run(limit: int) -> None:
        for _ in range(20):
            try:
                inspect_image(data, max_bytes=CORPUS_MAX_BYTES, max_pixels=limit)
                outcomes[limit].append(True)
            except InvalidUpload:
                outcomes[limit].append(False)

    threads = [threading.Thread(target=run, args=(limit,)) for limit in (20_000, 19_999) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes[20_000] == [True] * 60
    assert outcomes[19_999] == [False] * 60
