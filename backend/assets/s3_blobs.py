"""The S3 adapter of the blob-store port: blobs as objects ``<prefix><sha256>`` in a bucket.

Works with AWS S3 and the compatible stores (MinIO, Ceph RGW, Alibaba OSS, Cloudflare
R2); tested against Ceph RGW. A write is staged in a local temp file first (hashed and
capped on the way, inspectable, exactly like the local store), then uploaded under its
hash: one PUT for small files, a multipart upload from the file for large ones (parts
read from disk, never the whole file in memory). S3 makes an object visible only when its
PUT or its multipart completion succeeds, so an interrupted upload never leaves a short
object under a final key; a failed multipart upload is aborted (and a bucket lifecycle
rule removes the parts of one whose process died, see docs/deploy.md). Uploads are
retried a few times. An object is never overwritten: a name that exists with the right
size is trusted (its name is its content), and single PUTs carry ``If-None-Match: *``.

Credentials come from the settings or boto3's own chain (environment, instance role);
they are never logged and not kept in any attribute that a ``repr`` shows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import AssetStoreError, AssetStoreUnavailable, NotFound
from ..ports.blob_store import BlobRef, StoredBlob, is_sha256
from .blobs import CHUNK_SIZE, write_hashed

log = logging.getLogger("backend.assets.s3_blobs.S3BlobStore")

#: Files this large or larger go up as multipart uploads of :data:`PART_SIZE` parts.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
#: Whole-upload attempts (boto3 retries each request on its own, too).
ATTEMPTS = 4


class _StagedObject:
    """A staged write of the S3 store (see :class:`backend.ports.blob_store.Staged`)."""

    def __init__(self, store: S3BlobStore, *, path: Path, sha256: str, size: int) -> None:
        self._store = store
        self.path = path
        self.sha256 = sha256
        self.size = size
        self.committed: BlobRef | None = None

    def commit(self) -> BlobRef:
        if self.committed is None:
            self.committed = self._store._install(self.path, self.sha256, self.size)
        return self.committed


class S3BlobStore:
    """Blobs in ``bucket`` under ``prefix``; ``staging_dir`` is a local scratch directory."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str = "",
        region: str = "",
        access_key: str = "",
        secret_key: str = "",
        path_style: bool = False,
        prefix: str = "",
        staging_dir: Path | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        owner_acl: bool = True,
        attempts: int = ATTEMPTS,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not bucket:
            raise AssetStoreError("asset_store = 's3' needs s3_bucket.", zh="asset_store = 's3' 需要设置 s3_bucket。")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self._staging = Path(staging_dir) if staging_dir else Path(tempfile.gettempdir()) / "studio-s3-staging"
        self._staging.mkdir(parents=True, exist_ok=True)
        config = Config(
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # S3-compatible stores (RGW, MinIO, OSS, R2) do not all know the checksum
            # headers that newer boto3 sends by default; S3 itself accepts either.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        keys = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key} if access_key else {}
        self._client = boto3.client("s3", endpoint_url=endpoint or None, region_name=region or None, config=config, **keys)
        self._attempts = attempts
        self._multipart_threshold = multipart_threshold
        # An object belongs to whoever put it; the studio (the bucket's owner) must read
        # what an agent's credential wrote.
        self._put_args = {"ContentType": "application/octet-stream"}
        if owner_acl:
            self._put_args["ACL"] = "bucket-owner-full-control"
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=part_size,
                                        max_concurrency=4, use_threads=True)

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, endpoint={self.endpoint!r}, prefix={self.prefix!r})"

    # ---- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, chunks: Iterable[bytes | memoryview], *, max_bytes: int) -> Iterator[_StagedObject]:
        path = self._staging / f"{os.getpid()}-{secrets.token_hex(12)}.part"
        try:
            # Staging is scratch space: no fsync, the object store keeps the durable copy.
            sha256, size = write_hashed(path, chunks, max_bytes, durable=False)
            yield _StagedObject(self, path=path, sha256=sha256, size=size)
        finally:
            path.unlink(missing_ok=True)

    def write(self, chunks: Iterable[bytes | memoryview], *, max_bytes: int) -> BlobRef:
        with self.stage(chunks, max_bytes=max_bytes) as staged:
            return staged.commit()

    def write_bytes(self, data: bytes, *, max_bytes: int | None = None) -> BlobRef:
        view = memoryview(data)
        pieces = (view[i : i + CHUNK_SIZE] for i in range(0, len(view), CHUNK_SIZE))
        return self.write(pieces, max_bytes=len(data) if max_bytes is None else max_bytes)

    def _install(self, temp: Path, sha256: str, size: int) -> BlobRef:
        key = self._key(sha256)
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                if self._stored_size_if_allowed(key) == size:
                    return BlobRef(sha256, size)  # already there: the same bytes by name
                if size < self._multipart_threshold:
                    with open(temp, "rb") as fh, contextlib.suppress(_PreconditionFailed):
                        self._call(self._client.put_object, Bucket=self.bucket, Key=key, Body=fh,
                                   ContentLength=size, IfNoneMatch="*", **self._put_args)
                else:
                    self._client.upload_file(str(temp), self.bucket, key, Config=self._transfer,
                                             ExtraArgs=self._put_args)
                stored = self._stored_size_if_allowed(key)
                if stored not in (size, None):
                    raise AssetStoreError(f"The object store kept {stored} bytes of {sha256}, not {size}.",
                                          zh=f"对象存储保存了 {sha256} 的 {stored} 字节，而不是 {size} 字节。")
                return BlobRef(sha256, size)
            except AssetStoreUnavailable as exc:
                if attempt == self._attempts:
                    raise
                log.warning("upload of %s failed (attempt %d of %d), retrying: %s", sha256, attempt, self._attempts, exc)
            except AssetStoreError:
                raise
            except Exception as exc:  # boto3's transfer manager raises its own wrappers
                if attempt == self._attempts or not _transient(exc):
                    raise _unavailable(exc) from exc
                log.warning("upload of %s failed (attempt %d of %d), retrying: %s", sha256, attempt, self._attempts, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    # ---- reading -------------------------------------------------------------------------

    def exists(self, asset_id: str) -> bool:
        return is_sha256(asset_id) and self._stored_size(self._key(asset_id)) is not None

    def size(self, asset_id: str) -> int:
        size = self._stored_size(self._key(asset_id)) if is_sha256(asset_id) else None
        if size is None:
            raise self._missing(asset_id)
        return size

    def open(self, asset_id: str) -> BinaryIO:
        if not is_sha256(asset_id):
            raise self._missing(asset_id)
        try:
            response = self._call(self._client.get_object, Bucket=self.bucket, Key=self._key(asset_id))
        except _NoSuchKey:
            raise self._missing(asset_id) from None
        return response["Body"]  # a botocore StreamingBody: an io.IOBase that streams

    def delete(self, asset_id: str) -> None:
        if is_sha256(asset_id):
            self._call(self._client.delete_object, Bucket=self.bucket, Key=self._key(asset_id))

    def listing(self) -> Iterator[StoredBlob]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix):]
                    if is_sha256(name):
                        modified = item["LastModified"].astimezone(dt.timezone.utc)
                        yield StoredBlob(name, int(item["Size"]), modified)
        except Exception as exc:
            raise _unavailable(exc) from exc

    def presign_get(self, asset_id: str, *, expires: int = 3600) -> str | None:
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(asset_id)}, ExpiresIn=expires
        )

    def location(self, asset_id: str) -> str:
        return f"s3://{self.bucket}/{self._key(asset_id)}"

    def close(self) -> None:
        self._client.close()

    # ---- helpers -------------------------------------------------------------------------

    def _key(self, asset_id: str) -> str:
        if not is_sha256(asset_id):
            raise NotFound(f"{asset_id!r} is not a valid asset id.", zh=f"{asset_id!r} 不是有效的资源编号。")
        return self.prefix + asset_id

    def _stored_size(self, key: str) -> int | None:
        try:
            return int(self._call(self._client.head_object, Bucket=self.bucket, Key=key)["ContentLength"])
        except _NoSuchKey:
            return None

    def _stored_size_if_allowed(self, key: str) -> int | None:
        """The size, or None when absent or when this credential may only write (an
        agent's, docs/deploy.md): then the conditional PUT alone keeps objects unchanged."""
        try:
            return self._stored_size(key)
        except _Forbidden:
            return None

    def _call(self, method: Any, **kwargs: Any) -> Any:
        """One S3 request; errors become NotFound, a precondition, or AssetStoreUnavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("404", "NoSuchKey", "NotFound"):
                raise _NoSuchKey() from None
            if code == "PreconditionFailed" or status == 412:
                raise _PreconditionFailed() from None
            if code in ("403", "AccessDenied", "Forbidden") or status == 403:
                raise _Forbidden(
                    "The object store refused access; check the credential and the bucket policy (docs/deploy.md).",
                    zh="对象存储拒绝访问，请检查凭据和存储桶策略（docs/deploy.md）。",
                ) from None
            raise _unavailable(exc) from exc
        except (BotoCoreError, OSError) as exc:
            raise _unavailable(exc) from exc

    def _missing(self, asset_id: str) -> NotFound:
        return NotFound(f"No stored file for asset {asset_id}.", zh=f"找不到资源 {asset_id} 的文件。")


class _NoSuchKey(Exception):
    pass


class _PreconditionFailed(Exception):
    pass


class _Forbidden(AssetStoreError):
    """This credential may not do that (an agent's write-only one may not read)."""


def _transient(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
    return isinstance(exc, (BotoCoreError, OSError)) or "Connect" in type(exc).__name__


def _unavailable(exc: BaseException) -> AssetStoreUnavailable:
    # The error's text names the endpoint and bucket at most; botocore never puts keys in it.
    log.warning("the object store failed: %s", exc)
    return AssetStoreUnavailable(
        f"The object store is not available ({type(exc).__name__}). Nothing was kept; please try again later.",
        zh="对象存储暂不可用，未保留任何内容，请稍后重试。",
    )
