"""The assets room: stored bytes (the blob stores), who owns them (records), image checks.

``from backend import assets`` gives the ownership functions of :mod:`.records`, which is
what most callers want; the stores are in :mod:`.blobs` (a directory) and
:mod:`.s3_blobs` (an S3 bucket), chosen by :func:`.stores.open_blob_store`.
"""

from .records import (
    KINDS,
    AssetRecord,
    check_output_blob,
    display_name,
    get_asset,
    list_uploads,
    open_for_user,
    record_output_in,
    register_output,
    store_upload,
    user_can_read,
)

__all__ = [
    "KINDS",
    "AssetRecord",
    "check_output_blob",
    "display_name",
    "get_asset",
    "list_uploads",
    "open_for_user",
    "record_output_in",
    "register_output",
    "store_upload",
    "user_can_read",
]
