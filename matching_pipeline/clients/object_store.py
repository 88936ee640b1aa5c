"""Object storage through fsspec: the one place a URL becomes a filesystem.

Every worker of a Kubernetes deployment starts on an empty disk, so what runs share (the catalog
index, arriving item files) lives where all of them reach it: ``s3://bucket/prefix`` (any
S3-compatible store, through s3fs) or ``file:///...`` (a mounted volume, and the tests).

Credentials are never passed through here: s3fs hands over to botocore, which reads the standard
AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_DEFAULT_REGION``), a profile, or the pod's IAM role. Only the endpoint of an S3-compatible
store (MinIO, Ceph, moto) is configuration (``MATCHING_S3_ENDPOINT_URL``), so nothing secret can
end up in run config, logs or metadata by way of this module.
"""

from __future__ import annotations

import uuid
from typing import Any

import fsspec
from fsspec import AbstractFileSystem


def storage_options(url: str, endpoint_url: str = "") -> dict[str, Any]:
    """fsspec options for ``url``: only the endpoint for S3, never a credential."""
    if url.startswith(("s3://", "s3a://")) and endpoint_url:
        return {"client_kwargs": {"endpoint_url": endpoint_url}}
    return {}


def open_store(url: str, endpoint_url: str = "") -> tuple[AbstractFileSystem, str]:
    """The filesystem behind ``url`` and the root path inside it, without a trailing slash.

    Raises ``ImportError`` naming the extra to install when the URL's protocol needs a package
    that is missing (``s3://`` needs ``pip install 'matching_pipeline[s3]'``).
    """
    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options(url, endpoint_url))
    except ImportError as exc:
        raise ImportError(f"{url.split('://')[0]}:// URLs need the s3 extra: pip install 'matching_pipeline[s3]' ({exc})") from exc
    return fs, root.rstrip("/")


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for object keys (always ``/``, whatever the local OS)."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def publish_file(fs: AbstractFileSystem, local_path: str, key: str, *, replace: bool = False) -> bool:
    """Put a local file at ``key`` unless an object is already there (or ``replace``, for a copy
    found unreadable); whether this call put it.

    The file goes to a temporary key first and is then moved into place, so a reader never sees a
    half-written object (on S3 the move is a server-side copy, which is atomic, then a delete).
    Two writers racing both upload, and the later move replaces the earlier: callers publish only
    content named by its own hash, so either copy is the same content.
    """
    if not replace and fs.exists(key):
        return False
    temporary = f"{key}.tmp-{uuid.uuid4().hex}"
    fs.put_file(local_path, temporary)
    try:
        if not replace and fs.exists(key):  # someone finished first: theirs is as good as ours
            return False
        fs.mv(temporary, key)
        return True
    finally:
        if fs.exists(temporary):
            fs.rm_file(temporary)
