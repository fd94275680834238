"""Remote stores: where `sci push` and `sci pull` copy objects — a directory, S3, GCS or HTTP.

A remote mirrors the local store's layout (`FORMAT`, `blobs/`, `trees/`, `actions/`) under a
root and is reached only by name: every look-up is a GET or HEAD of a path computed from a key
or a digest, never a listing, so the plainest server that answers GET and PUT is enough
(SPEC §9). A remote moves bytes and does not judge them: transfer.py verifies every object it
downloads before the local store admits it. Credentials come only from each service's standard
places (AWS variables and files, Google default credentials, ~/.netrc); sci never stores them.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import netrc
import os
import re
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union
from urllib.parse import quote, urlsplit

from sci.errors import UserError, WorkFailed

# Bytes read or sent per step when streaming: large enough that per-call overhead vanishes,
# small enough that a 1 GiB object never sits in memory.
CHUNK = 1024 * 1024
_FICLONE = 0x40049409  # linux/fs.h: share the source's blocks (reflink)
MAPPING_KEYS = ("url", "endpoint_url", "region")
# Keys that would put a credential into sci.yaml; refused with a pointer to the standard places.
_CREDENTIAL_WORDS = ("key", "secret", "token", "password", "credential")

Payload = Union[bytes, str, os.PathLike]  # bytes to upload, or the path of a file to stream


class RemoteError(WorkFailed):
    """A remote could not be used; `remote` names it (name and URL) for the one-line report."""

    def __init__(self, message: str, *, remote: str, hint: str | None = None):
        super().__init__(f"remote {remote}: {message}", hint=hint)
        self.remote = remote


class RemoteUnreachable(RemoteError):
    """No answer: refused connection, unknown host, time-out."""


class RemoteAuthError(RemoteError):
    """The remote answered, but refused who we are (missing or wrong credentials)."""


class RemoteNotFound(RemoteError):
    """The remote's container does not exist: a bucket or a directory root."""


class RemoteConfigError(UserError):
    """The remote is named wrongly: an unknown URL kind, a bad mapping, a missing package."""


def _safe_relpath(relpath: str) -> str:
    """Object paths come from keys and digests; refuse anything that could leave the root."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a remote object path: {relpath!r}")
    return relpath


class Remote:
    """One remote store. Every method may be called from several threads at once.

    `get` returns small objects whole; `download` streams an object in chunks into `write` (so
    a 1 GiB blob never sits in memory); `put` uploads bytes or streams a file; `exists` is a
    HEAD. A missing object is `None` / `False`, never an error; a remote that cannot be used at
    all raises a RemoteError subclass.
    """

    kind = "remote"

    def __init__(self, url: str, name: str):
        self.url = url
        self.name = name
        self.format_checked = False  # set by transfer.check_format once FORMAT was read

    def __str__(self) -> str:
        return f"{self.name!r} ({self.url})"

    def get(self, relpath: str) -> bytes | None:
        chunks: list[bytes] = []
        return b"".join(chunks) if self.download(relpath, chunks.append) else None

    def download(self, relpath: str, write: Callable[[bytes], Any]) -> bool:
        raise NotImplementedError

    def put(self, relpath: str, data: Payload) -> None:
        raise NotImplementedError

    def exists(self, relpath: str) -> bool:
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the remote ready to be written (e.g. create a directory root); default: nothing."""

    def close(self) -> None:
        """Release connections; the remote must not be used afterwards."""

    def _fail(self, cls: type[RemoteError], message: str, hint: str | None = None) -> RemoteError:
        return cls(message, remote=str(self), hint=hint)


# -- a directory ---------------------------------------------------------------------------
def _copy_into(src: str, dst_fd: int) -> None:
    """Copy a file into an open new file: reflink where possible, else the kernel copies."""
    with open(src, "rb") as fin:
        try:
            fcntl.ioctl(dst_fd, _FICLONE, fin.fileno())
            return
        except OSError:
            pass  # no reflinks across filesystems or on ext4: fall through to a real copy
        src_fd = fin.fileno()
        while True:
            try:
                if os.copy_file_range(src_fd, dst_fd, 1 << 30) == 0:
                    return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                break
        while chunk := os.read(src_fd, CHUNK):
            write_all(dst_fd, chunk)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class DirectoryRemote(Remote):
    """A remote that is a directory (local disk, NFS, a mounted share).

    Writes are atomic like the store's: a temp file in `<root>/tmp/` renamed into place, so
    concurrent pushers of the same object both leave a complete object behind.
    """

    kind = "directory"

    def __init__(self, root: Path, *, url: str, name: str):
        super().__init__(url, name)
        self.root = Path(root)

    def _path(self, relpath: str) -> Path:
        return self.root / _safe_relpath(relpath)

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise self._fail(RemoteNotFound, f"directory {self.root} does not exist",
                             hint="check the path, or `sci push` to create it")

    def _os_error(self, exc: OSError, what: str) -> RemoteError:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return self._fail(RemoteAuthError, f"permission denied {what}")
        return self._fail(RemoteError, f"cannot {what}: {exc.strerror or exc}")

    def download(self, relpath: str, write: Callable[[bytes], Any]) -> bool:
        path = self._path(relpath)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._check_root()
            return False
        except OSError as exc:
            raise self._os_error(exc, f"reading {relpath}") from None
        try:
            while chunk := os.read(fd, CHUNK):
                write(chunk)
        finally:
            os.close(fd)
        return True

    def exists(self, relpath: str) -> bool:
        if self._path(relpath).exists():
            return True
        self._check_root()
        return False

    def prepare(self) -> None:
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_error(exc, f"creating {self.root}") from None

    def put(self, relpath: str, data: Payload) -> None:
        final = self._path(relpath)
        tmpdir = self.root / "tmp"
        try:
            tmpdir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix="put-")
        except OSError as exc:
            raise self._os_error(exc, f"writing {relpath}") from None
        try:
            try:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    write_all(fd, data)
                else:
                    _copy_into(os.fspath(data), fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o444)  # like the store: objects are not edited in place
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise self._os_error(exc, f"writing {relpath}") from None


# -- HTTP (WebDAV, or any server that answers GET, HEAD and PUT) -------------------------------
class HttpRemote(Remote):
    """A remote behind plain HTTP(S): GET to read, HEAD to test, PUT to write.

    A WebDAV server may refuse a PUT whose parent collection is missing (409 Conflict, or 500
    from nginx's dav module without `create_full_put_path on`): then the parents are made with
    MKCOL and the PUT is retried once. One keep-alive connection per thread. Credentials: ~/.netrc (or $NETRC) for
    Basic auth, or a bearer token in SCI_HTTP_TOKEN; never the URL.
    """

    kind = "http"

    def __init__(self, url: str, *, name: str, timeout: float = 60.0):
        super().__init__(url, name)
        parts = urlsplit(url)
        if parts.username or parts.password:
            raise RemoteConfigError(f"remote {name!r}: credentials must not be written in the URL",
                                    hint="put them in ~/.netrc, or a token in SCI_HTTP_TOKEN")
        if not parts.hostname:
            raise RemoteConfigError(f"remote {name!r}: {url} names no host")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = quote(parts.path.rstrip("/"))
        self._timeout = timeout
        self._headers = {"User-Agent": "sci"}
        auth = self._authorization(self._host)
        if auth:
            self._headers["Authorization"] = auth
        self._local = threading.local()
        self._made: set[str] = set()  # collections known to exist (MKCOL done or not needed)

    @staticmethod
    def _authorization(host: str) -> str | None:
        token = os.environ.get("SCI_HTTP_TOKEN")
        if token:
            return f"Bearer {token}"
        try:
            found = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            return None
        if not found:
            return None
        login, _, password = found
        return "Basic " + base64.b64encode(f"{login}:{password or ''}".encode()).decode()

    def _connection(self, fresh: bool = False):
        import http.client

        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            if self._https:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                   context=ssl.create_default_context(), blocksize=CHUNK)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout,
                                                  blocksize=CHUNK)
            self._local.conn = conn
        return conn

    def _path(self, relpath: str) -> str:
        return f"{self._base}/{quote(_safe_relpath(relpath))}"

    def _request(self, method: str, path: str, body: Any = None, headers: dict | None = None):
        """Send one request for a URL path; returns the response with its body unread. Retries
        once on a kept-alive connection the server had closed (every request here is
        idempotent)."""
        import http.client

        all_headers = {**self._headers, **(headers or {})}
        for attempt in (0, 1):
            conn = self._connection(fresh=attempt > 0)
            try:
                if hasattr(body, "seek"):
                    body.seek(0)
                conn.request(method, path, body=body, headers=all_headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if attempt:
                    raise self._fail(RemoteUnreachable, f"connection lost: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                raise self._fail(RemoteUnreachable, f"cannot connect to {self._host}:{self._port}: "
                                 f"{getattr(exc, 'strerror', None) or exc}",
                                 hint="check the URL and that the server is running") from None
        raise AssertionError("unreachable")

    def _check(self, resp, what: str, ok: tuple[int, ...]) -> None:
        if resp.status in ok:
            return
        resp.read()
        if resp.status in (401, 403):
            raise self._fail(RemoteAuthError, f"{resp.status} {resp.reason} for {what}",
                             hint="set credentials in ~/.netrc or SCI_HTTP_TOKEN")
        raise self._fail(RemoteError, f"{resp.status} {resp.reason} for {what}")

    def download(self, relpath: str, write: Callable[[bytes], Any]) -> bool:
        resp = self._request("GET", self._path(relpath))
        if resp.status == 404:
            resp.read()
            return False
        self._check(resp, relpath, (200,))
        try:
            while chunk := resp.read(CHUNK):
                write(chunk)
        except BaseException:
            self._local.conn.close()  # the rest of the body is unread: the connection is spent
            raise
        return True

    def exists(self, relpath: str) -> bool:
        resp = self._request("HEAD", self._path(relpath))
        resp.read()
        if resp.status == 404:
            return False
        self._check(resp, relpath, (200, 204))
        return True

    def put(self, relpath: str, data: Payload) -> None:
        path = self._path(relpath)
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._put(path, relpath, bytes(data), len(data))
            return
        with open(data, "rb") as fh:
            self._put(path, relpath, fh, os.fstat(fh.fileno()).st_size)

    def _put(self, path: str, relpath: str, body: Any, size: int) -> None:
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        resp = self._request("PUT", path, body, headers)
        # A parent collection is missing: WebDAV says 409; nginx without create_full_put_path
        # says 500 (its rename into the missing directory failed). MKCOL, then try once more.
        if resp.status in (409, 500):
            resp.read()
            self._mkcol(path.rsplit("/", 1)[0] + "/")
            resp = self._request("PUT", path, body, headers)
        self._check(resp, relpath, (200, 201, 204))
        resp.read()

    def _mkcol(self, collection: str) -> None:
        """Create a collection (URL path ending in /) and its missing parents: MKCOL answers
        409 while a parent is missing, and 405 for one that exists already (perhaps made a
        moment ago by a concurrent pusher), which is as good as made."""
        if collection in self._made or collection == "/":
            return
        resp = self._request("MKCOL", collection)
        resp.read()
        if resp.status == 409:
            self._mkcol(collection.rstrip("/").rsplit("/", 1)[0] + "/")
            resp = self._request("MKCOL", collection)
            resp.read()
        if resp.status not in (200, 201, 405):
            self._check(resp, f"MKCOL {collection}", (201,))
        self._made.add(collection)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


# -- S3 and S3-compatible servers ------------------------------------------------------------
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
               "InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed", "403"}


class S3Remote(Remote):
    """A bucket and key prefix on S3 or any S3-compatible server, through boto3.

    boto3 rather than s3fs: each operation here is one request (HEAD, GET, PUT) and boto3's
    client is thread-safe, so a thread pool drives it directly; its transfer manager streams
    large uploads as multipart. The endpoint comes from `endpoint_url` or the standard
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; credentials only from the standard AWS chain.
    """

    kind = "s3"
    MULTIPART_THRESHOLD = 64 * 1024 * 1024

    def __init__(self, url: str, *, name: str, endpoint_url: str | None = None,
                 region: str | None = None):
        super().__init__(url, name)
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise RemoteConfigError(f"remote {name!r}: s3:// remotes need boto3",
                                    hint="install it: pip install 'sci[remote]' (or boto3)") from None
        parts = urlsplit(url)
        if not parts.netloc:
            raise RemoteConfigError(f"remote {name!r}: {url} names no bucket",
                                    hint="write s3://BUCKET/PREFIX")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                             or os.environ.get("AWS_ENDPOINT_URL") or None)
        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10, read_timeout=60, max_pool_connections=32,
            # Self-hosted servers (MinIO, Garage, moto) rarely have wildcard DNS for buckets.
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        session = boto3.session.Session()
        self._client = session.client("s3", endpoint_url=self.endpoint_url, region_name=region,
                                      config=config)
        self._bucket_checked = False

    def __str__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"{self.name!r} ({self.url}{where})"

    def _key(self, relpath: str) -> str:
        relpath = _safe_relpath(relpath)
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def _translate(self, exc: Exception, relpath: str) -> RemoteError:
        from botocore import exceptions as bx

        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return self._fail(RemoteAuthError, "no AWS credentials found",
                              hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError,
                            bx.ReadTimeoutError, bx.ConnectionClosedError)):
            return self._fail(RemoteUnreachable, f"cannot connect: {exc}",
                              hint="check the endpoint URL and the network")
        if isinstance(exc, bx.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                return self._bucket_missing()
            if code in _AUTH_CODES:
                return self._fail(RemoteAuthError, f"access refused ({code}) for {relpath}",
                                  hint="check the AWS credentials and the bucket's permissions")
            return self._fail(RemoteError, f"{code or 'error'} for {relpath}: {exc}")
        return self._fail(RemoteError, f"{relpath}: {exc}")

    def _bucket_missing(self) -> RemoteError:
        return self._fail(RemoteNotFound, f"bucket {self.bucket!r} does not exist",
                          hint="create it, or fix the bucket name in the remote's URL")

    def _missing(self) -> None:
        """After a 404 without a code (HEAD has no body): once, tell a missing key from a
        missing bucket, so a typo in the bucket name is not reported as an empty remote."""
        if self._bucket_checked:
            return
        from botocore import exceptions as bx

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except bx.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
                raise self._bucket_missing() from None
            raise self._translate(exc, "") from None
        except bx.BotoCoreError as exc:
            raise self._translate(exc, "") from None
        self._bucket_checked = True

    def download(self, relpath: str, write: Callable[[bytes], Any]) -> bool:
        from botocore import exceptions as bx

        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=self._key(relpath))
            body = resp["Body"]
            try:
                while chunk := body.read(CHUNK):
                    write(chunk)
            finally:
                body.close()
            return True
        except bx.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                self._missing()
                return False
            raise self._translate(exc, relpath) from None
        except bx.BotoCoreError as exc:
            raise self._translate(exc, relpath) from None

    def exists(self, relpath: str) -> bool:
        from botocore import exceptions as bx

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(relpath))
            return True
        except bx.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                self._missing()
                return False
            raise self._translate(exc, relpath) from None
        except bx.BotoCoreError as exc:
            raise self._translate(exc, relpath) from None

    def put(self, relpath: str, data: Payload) -> None:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore import exceptions as bx

        key = self._key(relpath)
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                self._client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))
            elif os.stat(data).st_size < self.MULTIPART_THRESHOLD:
                # One streamed PUT: the transfer manager would start a thread pool per file.
                with open(data, "rb") as body:
                    self._client.put_object(Bucket=self.bucket, Key=key, Body=body)
            else:
                config = TransferConfig(multipart_threshold=self.MULTIPART_THRESHOLD,
                                        multipart_chunksize=16 * 1024 * 1024, max_concurrency=4)
                self._client.upload_file(os.fspath(data), self.bucket, key, Config=config)
        except S3UploadFailedError as exc:
            cause = exc.__context__
            raise self._translate(cause if isinstance(cause, Exception) else exc, relpath) from None
        except (bx.ClientError, bx.BotoCoreError) as exc:
            raise self._translate(exc, relpath) from None

    def close(self) -> None:
        self._client.close()


# -- anything fsspec reaches (gs:// through gcsfs) --------------------------------------------
class FsspecRemote(Remote):
    """A remote on an fsspec filesystem; sci uses it for gs:// (gcsfs, Google's default
    credentials). Each object is one file: `cat`/`open` to read, `pipe`/`put` to write."""

    kind = "fsspec"

    def __init__(self, fs: Any, root: str, *, url: str, name: str):
        super().__init__(url, name)
        self.fs = fs
        self.root = root.rstrip("/")

    def _path(self, relpath: str) -> str:
        return f"{self.root}/{_safe_relpath(relpath)}"

    def _translate(self, exc: Exception, relpath: str) -> RemoteError:
        if isinstance(exc, PermissionError):
            return self._fail(RemoteAuthError, f"access refused for {relpath}: {exc}",
                              hint="check the credentials (for gs://: gcloud auth application-default login)")
        if isinstance(exc, (ConnectionError, socket.gaierror, TimeoutError)):
            return self._fail(RemoteUnreachable, f"cannot connect: {exc}")
        return self._fail(RemoteError, f"{relpath}: {exc}")

    def download(self, relpath: str, write: Callable[[bytes], Any]) -> bool:
        try:
            with self.fs.open(self._path(relpath), "rb", block_size=CHUNK) as fh:
                while chunk := fh.read(CHUNK):
                    write(chunk)
            return True
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            raise self._translate(exc, relpath) from None

    def exists(self, relpath: str) -> bool:
        try:
            return bool(self.fs.exists(self._path(relpath)))
        except (OSError, ValueError) as exc:
            raise self._translate(exc, relpath) from None

    def put(self, relpath: str, data: Payload) -> None:
        path = self._path(relpath)
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                self.fs.pipe_file(path, bytes(data))
            else:
                self.fs.put_file(os.fspath(data), path)
        except (OSError, ValueError) as exc:
            raise self._translate(exc, relpath) from None


# -- naming and opening ------------------------------------------------------------------------
def _spec_fields(spec: str | Mapping, name: str) -> dict[str, Any]:
    if isinstance(spec, (str, os.PathLike)):
        return {"url": os.fspath(spec)}
    if not isinstance(spec, Mapping):
        raise RemoteConfigError(f"remote {name!r} must be a URL or a mapping with `url`")
    for key in spec:
        if any(word in str(key).lower() for word in _CREDENTIAL_WORDS):
            raise RemoteConfigError(
                f"remote {name!r}: `{key}` would store a credential in the pipeline",
                hint="credentials come only from the standard variables or files "
                     "(AWS_ACCESS_KEY_ID / ~/.aws, ~/.netrc, gcloud)")
        if key not in MAPPING_KEYS:
            raise RemoteConfigError(f"remote {name!r}: unknown key `{key}`",
                                    hint=f"valid keys: {', '.join(MAPPING_KEYS)}")
    if not isinstance(spec.get("url"), str) or not spec["url"]:
        raise RemoteConfigError(f"remote {name!r} has no `url`")
    return dict(spec)


def open_remote(spec: str | os.PathLike | Mapping, *, name: str = "default",
                base_dir: str | os.PathLike | None = None) -> Remote:
    """Open the remote a URL (or `{url, endpoint_url, region}` mapping) names.

    Kinds: a directory path or file:// URL (relative paths resolve against `base_dir`, the
    workspace root, else the current directory); s3://BUCKET/PREFIX; gs://BUCKET/PREFIX;
    http(s)://HOST/PATH. Nothing is contacted here: errors about reachability, credentials or
    a missing bucket come from the first operation, as RemoteError subclasses.
    """
    fields = _spec_fields(spec, name)
    url = fields["url"]
    scheme = urlsplit(url).scheme.lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url) else ""
    if scheme != "s3" and (fields.get("endpoint_url") or fields.get("region")):
        raise RemoteConfigError(f"remote {name!r}: `endpoint_url` and `region` apply to s3:// only")
    if scheme in ("", "file"):
        path = Path(urlsplit(url).path if scheme else url).expanduser()
        if not path.is_absolute():
            path = Path(base_dir or os.getcwd()) / path
        return DirectoryRemote(path, url=url, name=name)
    if scheme == "s3":
        return S3Remote(url, name=name, endpoint_url=fields.get("endpoint_url"),
                        region=fields.get("region"))
    if scheme in ("gs", "gcs"):
        try:
            import fsspec
            import gcsfs  # noqa: F401  (fsspec finds it by protocol; import to fail clearly)
        except ImportError:
            raise RemoteConfigError(f"remote {name!r}: gs:// remotes need the gcsfs package",
                                    hint="install it: pip install gcsfs") from None
        parts = urlsplit(url)
        return FsspecRemote(fsspec.filesystem("gcs"), f"{parts.netloc}/{parts.path.strip('/')}",
                            url=url, name=name)
    if scheme in ("http", "https"):
        return HttpRemote(url, name=name)
    raise RemoteConfigError(f"remote {name!r}: unknown URL kind {scheme + '://'!r} in {url}",
                            hint="use a directory path, s3://, gs://, http:// or https://")


def select_remote(remotes: Mapping[str, Any] | None, name: str | None = None,
                  environ: Mapping[str, str] | None = None) -> tuple[str, Any] | None:
    """Which remote a command uses (SPEC §9): `--remote NAME` picks `remotes[NAME]`; without
    it, SCI_REMOTE overrides `remotes.default`. Returns (name, URL or mapping), or None when
    no remote is configured."""
    environ = os.environ if environ is None else environ
    remotes = remotes or {}
    if name is not None and name != "default":
        if name not in remotes:
            known = ", ".join(sorted(remotes)) or "none"
            raise RemoteConfigError(f"no remote named {name!r} (configured: {known})",
                                    hint="add it under `remotes:` in sci.yaml")
        return name, remotes[name]
    if environ.get("SCI_REMOTE"):
        return "default", environ["SCI_REMOTE"]
    if "default" in remotes:
        return "default", remotes["default"]
    if name == "default":
        raise RemoteConfigError("no default remote is configured",
                                hint="set SCI_REMOTE or `remotes: {default: URL}` in sci.yaml")
    return None
