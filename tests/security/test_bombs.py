"""Decompression bombs through plain uploads and through the mask canvas's layers, sent
as an attacker would (upload route + queue protocol, several at once), while the studio
process's resident memory is sampled from ``/proc/<pid>/status``.

Over-limit bombs are refused by their header before anything decodes them (nothing
stored, nothing charged); pictures at the limit are legitimate and decoded, but within
the decode budget, so memory stays within ``MAX_GROWTH`` of the idle figure.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from PIL import Image

from tests.backend import image_bombs
from tests.studio_process import StudioServer

from .conftest import Client, assert_no_leak, footprint, png, sign_up
from .gradio_protocol import Attacker, Form, file_data

MAX_GROWTH = 300 * 1024 * 1024
PARALLEL = 4


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """Sample the process's RSS every few milliseconds; the list holds the peak."""
    peak = [rss(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()


def idle_rss(pid: int) -> int:
    samples = []
    for _ in range(10):
        samples.append(rss(pid))
        time.sleep(0.1)
    return max(samples)


def png_stream(width: int, height: int, depth: int, colour: int, bytes_per_row: int) -> bytes:
    """A PNG of zero pixels, compressed row by row (the test never holds it decoded)."""
    def chunk(cid: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + bytes_per_row)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def one_bit_bomb() -> bytes:
    """The issue's bomb: 13000×13000 pixels of 1 bit in ~20 KB (0.9 GB through RGB)."""
    return png_stream(13000, 13000, 1, 0, 13000 // 8)


def rgba_at_the_limit() -> bytes:
    """36 megapixels of transparent RGBA (144 MB decoded) in ~150 KB: legitimate, heavy."""
    return png_stream(6000, 6000, 8, 6, 6000 * 4)


def jpeg_header_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 60000, 60000)
    return bytes(data)


def scan_bomb() -> bytes:
    return image_bombs.scan_bomb(3000, (1024, 1024))


def in_parallel(calls: list[Callable[[], object]]) -> list[object]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def store_event(form: Form) -> dict:
    image = form.components("image")[0]
    return form.event(image["id"], "upload")


def test_bombs_through_uploads_and_mask_layers_stay_within_the_memory_budget(studio: StudioServer) -> None:
    pid = studio.process.pid
    attackers = [sign_up(studio) for _ in range(PARALLEL)]
    sessions = [a.protocol() for a in attackers]
    forms = [s.open_form("inpaint-sd15") for s in sessions]
    for session, form in zip(sessions, forms):  # warm every code path once, with a small picture
        assert session.call(store_event(form), [file_data(session.upload("warm.png", png()), "warm.png")]).success
    idle = idle_rss(pid)

    refused = {"1-bit 13000×13000": one_bit_bomb(), "60000×60000 JPEG": jpeg_header_bomb(),
               "3000-scan JPEG": scan_bomb()}
    heavy = rgba_at_the_limit()
    before = {a.name: footprint(studio, a.name) for a in attackers}
    with peak_rss(pid) as peak:
        # Plain uploads: over-limit bombs, all at once from every attacker.
        for label, bomb in refused.items():
            paths = [s.upload(f"{label}.png", bomb) for s in sessions]
            outcomes = in_parallel([lambda s=s, f=f, p=p: s.call(store_event(f), [file_data(p, "bomb.png")])
                                    for s, f, p in zip(sessions, forms, paths)])
            for outcome in outcomes:
                assert not outcome.success, label
                assert_no_leak(outcome.text)
        assert {a.name: footprint(studio, a.name) for a in attackers} == before  # nothing stored

        # Pictures at the pixel limit: accepted, decoded one budget's worth at a time.
        paths = [s.upload("big.png", heavy) for s in sessions]
        outcomes = in_parallel([lambda s=s, f=f, p=p: s.call(store_event(f), [file_data(p, "big.png")])
                                for s, f, p in zip(sessions, forms, paths)])
        assert all(o.success for o in outcomes), [o.error for o in outcomes]

        # Mask layers over those pictures: a bomb layer is refused, a heavy one decoded within budget.
        for label, layer in (("1-bit layer", one_bit_bomb()), ("heavy layer", heavy)):
            layer_paths = [s.upload("layer.png", layer) for s in sessions]
            outcomes = in_parallel([lambda s=s, f=f, b=b, p=p: price_with_layer(s, f, b, p)
                                    for s, f, b, p in zip(sessions, forms, paths, layer_paths)])
            for outcome in outcomes:
                assert outcome.success
                assert_no_leak(outcome.text)
            if label == "1-bit layer":
                assert all("megapixel" in o.text for o in outcomes), outcomes[0].text[:500]
    growth = peak[0] - idle
    print(f"studio RSS: idle {idle / 2**20:.0f} MiB, peak {peak[0] / 2**20:.0f} MiB, growth {growth / 2**20:.0f} MiB")
    assert growth <= MAX_GROWTH, f"the studio grew by {growth / 2**20:.0f} MiB"
    for attacker in attackers:  # no job was made and nothing charged, only the pictures stored
        after = footprint(studio, attacker.name)
        assert (after.jobs, after.ledger, after.balance) == (before[attacker.name].jobs, before[attacker.name].ledger,
                                                             before[attacker.name].balance)


def price_with_layer(session: Attacker, form: Form, picture: str, layer: str) -> object:
    """Every price event of the canvas, with ``layer`` painted over ``picture``."""
    editor = form.components("imageeditor")[0]
    value = {"background": file_data(picture, "big.png"), "layers": [file_data(layer, "layer.png")],
             "composite": None, "id": None}
    dep = next(d for d in form.events_with_input(editor["id"]) if [editor["id"], "change"] in d["targets"])
    return session.call(dep, form.values(dep, **{str(editor["id"]): value}))


def test_a_bomb_layer_at_create_time_is_refused_and_nothing_is_charged(studio: StudioServer, attacker: Client) -> None:
    session = attacker.protocol()
    form = session.open_form("inpaint-sd15")
    picture = session.upload("pic.png", png(64, 64))
    assert session.call(store_event(form), [file_data(picture, "pic.png")]).success
    layer = session.upload("layer.png", one_bit_bomb())
    editor = form.components("imageeditor")[0]
    go = next(d for d in form.config["dependencies"] if any(t[0] == form.component("go")["id"] for t in d["targets"]))
    before = footprint(studio, attacker.name)
    value = {"background": file_data(picture), "layers": [file_data(layer)], "composite": None, "id": None}
    outcome = session.call(go, form.values(go, **{str(editor["id"]): value}))
    assert "megapixel" in outcome.text
    assert_no_leak(outcome.text)
    assert footprint(studio, attacker.name) == before
