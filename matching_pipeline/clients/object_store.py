"""Object storage through fsspec: the one place a URL becomes a filesystem.

Every worker of a Kubernetes deployment starts on an empty disk, so what runs share (the catalog,
its index, arriving item files) lives where all of them reach it: ``s3://bucket/prefix`` (any
S3-compatible store, through s3fs) or ``file:///...`` (a mounted volume, and the tests). A plain
local path is read through the same functions (fsspec's local filesystem).

Credentials are never passed through here: s3fs hands over to botocore, which reads the standard
AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_DEFAULT_REGION``), a profile, or the pod's IAM role. Only the endpoint of an S3-compatible
store (MinIO, Ceph, moto) is configuration (``MATCHING_S3_ENDPOINT_URL``), so nothing secret can
end up in run config, logs or metadata by way of this module.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL (``s3://bucket/key``, ``file:///...``) rather than a local path."""
    return bool(_URL.match(location))


def redact(location: str) -> str:
    """``location`` fit for a message or a log: a URL loses its user info, query and fragment
    (where a credential could hide); a local path is returned as it is."""
    if not is_url(location):
        return location
    parts = urlsplit(location)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def object_name(location: str) -> str:
    """The last part of a path or URL (``catalog.csv``), for short messages."""
    return redact(location).rstrip("/").rsplit("/", 1)[-1]


Stamp = tuple[str, int]
"""What one metadata request tells of an object or file: a tag (ETag, or modification time and
inode for a local file) and the size; a new stamp means the content may have changed."""


def object_stamp(location: str, endpoint_url: str = "") -> Stamp | None:
    """The :data:`Stamp` of the object or file at ``location`` (a path or URL), without reading it;
    None when the store reports neither an ETag nor a modification time (only the content can tell).

    Asks the store each time (no listing cache), so a tick sees an object replaced since the last.
    Raises ``FileNotFoundError`` or ``OSError`` naming the location (redacted), as :func:`read_object`.
    """
    fs, path = open_store(location, endpoint_url)
    with _naming(location):
        fs.invalidate_cache(path)
        info = fs.info(path)
        if info.get("type") == "directory":
            raise IsADirectoryError(path)
    size = int(info.get("size") or 0)
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    if tag is None and info.get("mtime") is not None:
        tag = f"{info['mtime']!r}:{info.get('ino', '')}"  # a local file; a replaced file has a new inode
    tag = tag if tag is not None else info.get("LastModified") or info.get("last_modified")
    return None if tag is None else (str(tag), size)


def read_object(location: str, endpoint_url: str = "") -> bytes:
    """The bytes of the object or file at ``location`` (a path or URL).

    A missing one raises ``FileNotFoundError``, any other failure ``OSError``; both name the
    location with :func:`redact`, never a credential, and carry no chained exception that might.
    """
    fs, path = open_store(location, endpoint_url)
    with _naming(location):
        data: bytes = fs.cat_file(path)
    return data


@contextmanager
def _naming(location: str) -> Iterator[None]:
    """Turn whatever reading ``location`` raises into an ``OSError`` whose message names it."""
    shown = redact(location)
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown}: no such file or object") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{shown}: is a folder or prefix, not a file") from None
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and OS errors alike: the location is unreadable
        detail = str(exc).replace(location, shown)[:300]
        if any(secret in detail for secret in _hidden_parts(location)):
            detail = "details withheld: they quote the URL's user info or query"
        raise OSError(f"{shown}: cannot be read ({type(exc).__name__}: {detail})") from None


def _hidden_parts(location: str) -> list[str]:
    """The parts of a URL that :func:`redact` drops (user info, query, fragment), each non-empty."""
    if not is_url(location):
        return []
    parts = urlsplit(location)
    userinfo = parts.netloc.rpartition("@")[0]
    return [p for p in (userinfo, parts.username, parts.password, parts.query, parts.fragment) if p]
