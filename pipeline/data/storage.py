"""Where dataset files live: a local directory or an object-store prefix, read the same way.

A dataset location is a local path or a URI pyarrow's filesystems resolve: `s3://bucket/set` (AWS, or any
S3-compatible store: MinIO, Ceph, R2, through `AWS_ENDPOINT_URL`), `gs://bucket/set`, `hdfs://...`,
`abfs://...`. Credentials come from each store's standard provider chain (for S3: `AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY`, `~/.aws`, an instance role). Reads are retried with backoff; an object that cannot be
read raises `StorageError` naming it, with what to check.

`ObjectReader` adds the optional per-node cache (`data.cache_dir`): an object is fetched once per node and
later epochs read local disk. Cache entries are keyed by the object's URI, size and modification time (from one
listing when the dataset is opened), so an object changed in the bucket is fetched again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.uri import is_uri

Location = str | os.PathLike  # a local path, or a URI (str)

RETRIES = 4  # attempts for a transient error (pyarrow's S3 client retries each request 3 times on its own)
BACKOFF_S = 0.5  # first wait; doubles each attempt
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


class DatasetError(ValueError):
    """A user error in a dataset: the message names the file or object and the record id."""


class StorageError(DatasetError):
    """An object or directory of a dataset that cannot be read: the message names it and says what to check."""


class ObjectNotFound(StorageError):
    """The bucket exists, the object does not."""


def is_remote(location: Location) -> bool:
    """True for an object-store URI; a local path or a `file://` URI is local."""
    text = os.fspath(location)
    return is_uri(text) and not text.startswith("file://")


def local_path(location: Location) -> Path:
    return Path(os.fspath(location).removeprefix("file://"))


def join(location: Location, *parts: str) -> Location:
    """`location/part/...`: a `Path` for a local location, a URI string for a remote one."""
    if not is_remote(location):
        return local_path(location).joinpath(*parts)
    return "/".join([os.fspath(location).rstrip("/"), *(p.strip("/") for p in parts)])


def absolute(location: Location) -> str:
    """A local path made absolute (Ray workers run in another directory); a remote URI as it is."""
    return os.fspath(location) if is_remote(location) else str(local_path(location).resolve())


def display_name(location: Location) -> str:
    """The last path component: a dataset's name in run and model names."""
    return os.fspath(location).rstrip("/").rsplit("/", 1)[-1] if is_remote(location) else local_path(location).name


def filesystem(uri: str):
    """`(pyarrow FileSystem, path inside it)` of a remote URI. S3 honours `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`
    (an S3-compatible store: no region lookup against AWS then)."""
    scheme, _, rest = uri.partition("://")
    if scheme in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return _s3(endpoint, _region(endpoint, rest.split("/", 1)[0])), rest
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError / ValueError for unknown schemes and bad URIs
        raise StorageError(f"{uri}: no filesystem for this URI ({e})") from e


def _region(endpoint: str | None, bucket: str) -> str | None:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region or endpoint:
        return region or "us-east-1"
    return _bucket_region(bucket)


@functools.cache
def _bucket_region(bucket: str) -> str | None:
    from pyarrow import fs

    try:
        return fs.resolve_s3_region(bucket)
    except Exception:  # no network to AWS, or no such bucket: the read that follows names the object
        return None


@functools.cache
def _s3(endpoint: str | None, region: str | None):
    """One S3 client per endpoint and region in each process."""
    from pyarrow import fs

    scheme = "https"
    if endpoint and "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
    return fs.S3FileSystem(
        endpoint_override=endpoint,
        scheme=scheme,
        region=region,
        connect_timeout=10,
        request_timeout=60,
        retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=3),
    )


def read_bytes(location: Location) -> bytes:
    """The whole file or object."""
    if not is_remote(location):
        with open(local_path(location), "rb") as f:
            return f.read()
    fs, path = filesystem(os.fspath(location))
    return _retried(os.fspath(location), lambda: _read_all(fs, path))


def read_head(location: Location, num_bytes: int) -> bytes:
    """The first `num_bytes` (fewer for a smaller file): enough for an image header, one ranged request."""
    if not is_remote(location):
        with open(local_path(location), "rb") as f:
            return f.read(num_bytes)
    fs, path = filesystem(os.fspath(location))

    def head() -> bytes:
        with fs.open_input_file(path) as f:
            return f.read(num_bytes)

    return _retried(os.fspath(location), head)


def read_text(location: Location) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(location: Location, data: bytes) -> None:
    """Write a whole file or object. A reader sees all of it or nothing: a local file is written beside its name
    and renamed into place; an object store publishes an object when its upload completes."""
    if not is_remote(location):
        path = local_path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            partial.write_bytes(data)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)  # a failed write leaves nothing behind
        return
    fs, path = filesystem(os.fspath(location))

    def put() -> None:
        with fs.open_output_stream(path) as f:
            f.write(data)

    _retried(os.fspath(location), put, verb="write")


def is_file(location: Location) -> bool:
    """Whether the file or object exists; a missing bucket is an error, not a missing object."""
    if not is_remote(location):
        return local_path(location).is_file()
    from pyarrow import fs as pafs

    uri = os.fspath(location)
    fs, path = filesystem(uri)
    kind = _retried(uri, lambda: fs.get_file_info(path).type)
    if kind == pafs.FileType.NotFound:
        bucket = path.split("/", 1)[0]
        if _retried(uri, lambda: fs.get_file_info(bucket).type) == pafs.FileType.NotFound:
            raise StorageError(f"{uri}: the bucket {bucket!r} does not exist (or these credentials cannot list it)")
    return kind == pafs.FileType.File


def list_files(location: Location) -> dict[str, tuple[int, int]]:
    """Every file under a remote prefix: path relative to it -> (size, modification time in ns), from listings
    (one request per 1,000 objects on S3)."""
    from pyarrow import fs as pafs

    fs, path = filesystem(os.fspath(location))
    selector = pafs.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True)
    infos = _retried(os.fspath(location), lambda: fs.get_file_info(selector))
    prefix = path.rstrip("/") + "/"
    return {
        info.path.removeprefix(prefix): (info.size, info.mtime_ns or 0)
        for info in infos
        if info.type == pafs.FileType.File
    }


def _read_all(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _retried(uri: str, call, verb: str = "read"):
    """`call()`, retried with backoff on transient errors; a missing object, bucket or credentials fails at once."""
    for attempt in range(RETRIES):
        try:
            return call()
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{uri}: no such object ({e})") from e
        except OSError as e:
            permanent = _permanent_reason(str(e))
            if permanent or attempt == RETRIES - 1:
                tries = "" if permanent else f" after {RETRIES} attempts"
                raise StorageError(f"{uri}: cannot {verb}{tries}: {permanent or e}") from e
            time.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


def _permanent_reason(message: str) -> str | None:
    """What a user must fix, for the errors retrying cannot mend (pyarrow's AWS messages carry these codes)."""
    text = message.upper()
    if "NO_SUCH_BUCKET" in text or "NOSUCHBUCKET" in text:
        return f"the bucket does not exist ({message.strip()})"
    if any(code in text for code in ("ACCESS_DENIED", "ACCESSDENIED", "FORBIDDEN", "HTTP RESPONSE CODE: 403")):
        found = [v for v in CREDENTIAL_VARIABLES if os.environ.get(v)]
        hint = (
            f"credentials from {', '.join(found)} were refused"
            if found
            else "no credentials in the environment (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or give the nodes an instance role)"
        )
        return f"access denied: {hint} ({message.strip()})"
    if "INVALID_ACCESS_KEY" in text or "SIGNATURE" in text or "INVALIDACCESSKEYID" in text:
        return f"the store refused the credentials ({message.strip()})"
    return None


@dataclass
class ObjectReader:
    """Reads a dataset's image files; remote objects through the per-node cache when `cache_dir` is set.

    `stamps` maps a remote image URI to (size, mtime_ns), from one listing (`for_images`); it is picklable, so
    DataLoader processes and Ray workers on the same node share the cache directory.
    """

    cache_dir: str | None = None
    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def for_images(cls, images_root: Location, cache_dir: str | None) -> ObjectReader:
        if not cache_dir or not is_remote(images_root):
            return cls(None)
        root = os.fspath(images_root).rstrip("/")
        return cls(cache_dir, {f"{root}/{rel}": stamp for rel, stamp in list_files(root).items()})

    def read(self, location: Location) -> bytes:
        stamp = self.stamps.get(os.fspath(location)) if self.cache_dir else None
        if stamp is None:
            return read_bytes(location)
        size, mtime = stamp
        key = hashlib.sha256(os.fspath(location).encode()).hexdigest()[:32]
        cached = Path(self.cache_dir, key[:2], f"{key}-{size}-{mtime}")
        try:
            return cached.read_bytes()
        except FileNotFoundError:
            pass
        data = read_bytes(location)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, cached)  # atomic: readers on this node never see half a file
        return data
