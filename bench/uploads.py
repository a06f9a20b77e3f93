"""Benchmark 4 — uploads: "draw again" with the same 10 MB image, and hashing throughput.

Part one runs a job on a 10 MB PNG (incompressible noise, so the file really is 10 MB),
then "draws again" with the same asset, and counts the bytes the agent sent to the node
(``ComfyClient.upload`` probed on the agent instance). Inputs are named on the node by
their content hash, so the second run must send nothing.

Part two stores the same bytes through ``LocalBlobStore.write_bytes`` (hashing on the caller's
thread while a writer thread writes 1 MiB chunks to a temp file, then the atomic rename)
and through ``assets.store_upload`` (the studio's upload path: the same plus the image
check and the database rows), beside plain ``hashlib.sha256`` over the same bytes, in the
same run, alternating; throughput is MB/s (10^6 bytes), medians over the repeats.

Both parts run again with the S3 store (a private Ceph RGW on this machine, started by
``tests/s3server.py``): the studio and the agent each with their own client and no shared
directory, the agent fetching the input by presigned URL. ``--no-s3`` skips that.

    python -m bench uploads [--mb 10] [--repeats 15] [--no-s3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import statistics
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from . import common
from .common import mark

WORKFLOW = "bench-upload"


def noise_png(megabytes: float, seed: int = 1) -> bytes:
    """A PNG of random pixels of about ``megabytes`` MB (it does not compress)."""
    import numpy as np
    from PIL import Image

    side = int((megabytes * 1e6 / 3) ** 0.5)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def draw_again(data: bytes, blobs: Any = None) -> dict[str, Any]:
    from backend import assets
    from backend.jobs.submit import Accepted, submit
    from comfysim import DEMO_MODELS, SimConfig

    sent: list[int] = []

    def probe(agent: Any) -> None:
        inner = agent.client.upload

        def upload(chunks: Iterable[bytes], **kw: Any) -> str:
            def counted() -> Iterator[bytes]:  # the input streams: count it as it goes out
                for chunk in chunks:
                    sent.append(len(chunk))
                    yield chunk
            return inner(counted(), **kw)

        agent.client.upload = upload

    runs = []
    with common.distributed_stack(nodes=1, sim=SimConfig(models=DEMO_MODELS, step_seconds=0.0),
                                  workflows=common.library(common.BENCH_WORKFLOWS), before_agent_start=probe,
                                  blobs=blobs) as stack:
        user = stack.user("bench-uploads")
        record = assets.store_upload(stack.backend.db, stack.backend.blobs, user.id, [data], name="big.png",
                                     max_bytes=64 * 1024 * 1024, max_pixels=36_000_000)
        for label in ("first draw", "draw again", "draw again"):
            before = sum(sent)
            t = time.perf_counter()
            result = submit(stack.backend, user.id, WORKFLOW, {"image": record.id}, idempotency_key=uuid.uuid4().hex,
                            on_queued=stack.worker.wake, queue_if_busy=True)
            assert isinstance(result, Accepted), result
            rows = stack.wait_ended([result.job.id], timeout=120, poll=0.01)
            state = rows[result.job.id].state
            runs.append({"label": label, "bytes": sum(sent) - before, "seconds": time.perf_counter() - t, "state": state})
    return {"runs": runs, "size": len(data)}


def hashing(data: bytes, repeats: int, s3: Any = None) -> dict[str, list[float]]:
    """MB/s per repeat; ``s3(path)`` makes an S3 store to measure beside the local one."""
    import tempfile
    from pathlib import Path

    from argon2 import PasswordHasher

    from backend import accounts, assets
    from backend.assets.blobs import LocalBlobStore

    out: dict[str, list[float]] = {"sha256": [], "store": [], "store_durable": [], "upload": [], "s3": [],
                                   "s3_upload": []}
    mb = len(data) / 1e6
    with tempfile.TemporaryDirectory(prefix="studio-bench-blobs-") as tmp, common.postgres_db() as db:
        fast = LocalBlobStore(Path(tmp) / "a", durable=False)
        durable = LocalBlobStore(Path(tmp) / "b", durable=True)
        bucket = s3(Path(tmp) / "s3") if s3 else None
        # Distinct pictures of the same size for the S3 uploads: the same bytes again
        # would not be sent (their object exists), which is "draw again", not throughput.
        pictures = [noise_png(mb, seed=1000 + i) for i in range(repeats + 2)] if bucket is not None else []
        cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        user = accounts.create_user(db, "bench-hash", "bench password 1", hasher=cheap)
        for i in range(repeats + 2):
            t = time.perf_counter()
            hashlib.sha256(data).hexdigest()
            sha = time.perf_counter() - t
            t = time.perf_counter()
            fast.write_bytes(data)
            store = time.perf_counter() - t
            t = time.perf_counter()
            durable.write_bytes(data)
            store_durable = time.perf_counter() - t
            t = time.perf_counter()
            assets.store_upload(db, fast, user.id, [data], name="x.png", max_bytes=64 * 1024 * 1024,
                                max_pixels=36_000_000)
            upload = time.perf_counter() - t
            if bucket is not None:
                # Fresh bytes each time (one changed byte): an object already there is not sent again.
                fresh = bytes([i % 256]) + data[1:]
                t = time.perf_counter()
                bucket.write_bytes(fresh)
                s3_store = time.perf_counter() - t
                t = time.perf_counter()
                assets.store_upload(db, bucket, user.id, [pictures[i]], name="x.png", max_bytes=64 * 1024 * 1024,
                                    max_pixels=36_000_000)
                s3_upload = time.perf_counter() - t
                if i >= 2:
                    out["s3"].append(mb / s3_store)
                    out["s3_upload"].append(mb / s3_upload)
            if i >= 2:  # warm-up: page cache, first directory creation
                out["sha256"].append(mb / sha)
                out["store"].append(mb / store)
                out["store_durable"].append(mb / store_durable)
                out["upload"].append(mb / upload)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench uploads", description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0, help="size of the image in MB")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-s3", action="store_true", help="measure the local store only")
    args = parser.parse_args(argv)
    common.quiet_logs()

    with contextlib.ExitStack() as stack:
        s3 = None if args.no_s3 else stack.enter_context(_s3_stores())
        data = noise_png(args.mb)
        again = draw_again(data)
        again_s3 = draw_again(data, s3) if s3 else None
        for name, result in (("local", again), ("s3", again_s3)):
            for r in result["runs"] if result else []:
                print(f"{name} {r['label']}: {r['bytes']:,} bytes sent to the node, "
                      f"{r['seconds'] * 1000:.0f} ms submit → {r['state']}", flush=True)
        speed = hashing(data, args.repeats, s3)
    med = {k: statistics.median(v) if v else 0.0 for k, v in speed.items()}
    ratio = med["store"] / med["sha256"]
    ratios = [s / h for s, h in zip(speed["store"], speed["sha256"])]
    print(f"sha256 {med['sha256']:.0f} MB/s; LocalBlobStore.write_bytes {med['store']:.0f} MB/s ({ratio:.1%}); "
          f"durable {med['store_durable']:.0f} MB/s; store_upload {med['upload']:.0f} MB/s", flush=True)
    second = [r["bytes"] for r in again["runs"][1:]]
    rows = [
        ["bytes sent to the node, first draw", f"{again['runs'][0]['bytes']:,}", f"{again['size']:,} (the file)",
         mark(again["runs"][0]["bytes"] == again["size"])],
        ["bytes sent to the node, draw again (×2)", " / ".join(f"{b:,}" for b in second), "0", mark(max(second) == 0)],
        ["submit → job ended, first draw / draw again",
         " / ".join(f"{r['seconds'] * 1000:.0f} ms" for r in again["runs"]), "—", ""],
        ["plain `hashlib.sha256`, same bytes", f"{med['sha256']:.0f} MB/s", "—", ""],
        ["`LocalBlobStore.write_bytes` (hash + write + rename)", f"{med['store']:.0f} MB/s = **{ratio:.1%}** of sha256",
         "≥ 90 %", mark(ratio >= 0.9)],
        ["per-repeat ratio, min / max", f"{min(ratios):.1%} / {max(ratios):.1%}", "—", ""],
        ["`LocalBlobStore.write_bytes`, durable (fsync file + directory)",
         f"{med['store_durable']:.0f} MB/s = {med['store_durable'] / med['sha256']:.1%}", "—", ""],
        ["`assets.store_upload` (+ image check, database rows)",
         f"{med['upload']:.0f} MB/s = {med['upload'] / med['sha256']:.1%}", "—", ""],
    ]
    if again_s3 is not None:
        second_s3 = [r["bytes"] for r in again_s3["runs"][1:]]
        rows += [
            ["S3 (Ceph RGW): bytes sent to the node, first draw / draw again (×2)",
             " / ".join(f"{r['bytes']:,}" for r in again_s3["runs"]), f"{again_s3['size']:,} / 0 / 0",
             mark(again_s3["runs"][0]["bytes"] == again_s3["size"] and max(second_s3) == 0)],
            ["S3: submit → job ended, first draw / draw again",
             " / ".join(f"{r['seconds'] * 1000:.0f} ms" for r in again_s3["runs"]), "—", ""],
            ["`S3BlobStore.write_bytes` (hash + stage + PUT to RGW)", f"{med['s3']:.0f} MB/s", "—", ""],
            ["`assets.store_upload` to S3 (+ image check, rows)", f"{med['s3_upload']:.0f} MB/s", "—", ""],
        ]
    out = common.table(["figure", "measured", "target", ""], rows)
    print(out)
    if not args.no_write:
        cmd = "python -m bench uploads" + ("" if argv is None else " " + " ".join(argv))
        common.write_section("uploads", f"""## 4. Uploads

`{cmd.strip()}` — a {again['size'] / 1e6:.1f} MB PNG of noise; one comfysim node with its agent on
PostgreSQL, Redis and RabbitMQ; throughput: medians of {args.repeats} alternating repeats over the same bytes
(non-durable store unless stated). {common.machine()}.

{out}
""")
    result = {"ratio": ratio, "again": max(second)}
    if again_s3 is not None:
        result.update(again_s3=max(r["bytes"] for r in again_s3["runs"][1:]), s3_mb_s=med["s3"])
    return result


@contextlib.contextmanager
def _s3_stores() -> Any:
    """A private Ceph RGW and a bucket; yields a function making a store in it (one per
    process, each with its own scratch directory, as on separate hosts)."""
    from backend.assets.s3_blobs import S3BlobStore
    from tests import s3server

    with s3server.rgw() as rgw:
        bucket = rgw.new_bucket("bench")

        def store(scratch: Any) -> Any:
            return S3BlobStore(bucket=bucket, endpoint=rgw.endpoint, region="us-east-1", access_key=rgw.access_key,
                               secret_key=rgw.secret_key, path_style=True, staging_dir=scratch / "staging")

        yield store


if __name__ == "__main__":
    main()
