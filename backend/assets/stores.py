"""Choosing the blob store an entry point uses, from the settings."""

from __future__ import annotations

from ..config import Settings
from ..ports.blob_store import BlobStore
from .blobs import LocalBlobStore


def open_blob_store(settings: Settings, *, durable: bool = True) -> BlobStore:
    """The store ``settings.asset_store`` names: the local directory or the S3 bucket."""
    if settings.asset_store == "s3":
        from .s3_blobs import S3BlobStore  # boto3 only where S3 is used

        return S3BlobStore(
            bucket=settings.s3_bucket,
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            path_style=settings.s3_path_style,
            prefix=settings.s3_prefix,
            owner_acl=settings.s3_bucket_owner_acl,
            staging_dir=settings.data_dir / "s3-staging",
        )
    return LocalBlobStore(settings.assets_dir, durable=durable)
