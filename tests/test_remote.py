"""Remote stores against real servers: a directory, moto's S3 server and nginx's WebDAV.

Each remote must round-trip bytes and files, answer misses with None/False, stream large
objects without holding them in memory, and turn every way a remote can fail (no server, wrong
credentials, no bucket, a bad name) into one typed error with a one-line message.
"""

from __future__ import annotations

import importlib.util
import os
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers import (aws_env, dav_server, directory_site, free_port, moto_server,  # noqa: F401
                     nginx_dav, s3_endpoint, s3_site, site)
from sci.errors import UserError, WorkFailed
from sci.remote.stores import (DirectoryRemote, FsspecRemote, HttpRemote, RemoteAuthError,
                        RemoteConfigError, RemoteNotFound, RemoteUnreachable, S3Remote,
                        open_remote, select_remote)

BIG = 24 * 1024 * 1024  # large enough that holding it whole would show in tracemalloc


def test_put_get_exists_round_trip(site, tmp_path):
    remote = site.open()
    remote.prepare()
    assert remote.get("blobs/ab/abc") is None
    assert remote.exists("blobs/ab/abc") is False
    remote.put("blobs/ab/abc", b"hello")
    assert remote.get("blobs/ab/abc") == b"hello"
    assert remote.exists("blobs/ab/abc") is True
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a file" * 1000)
    remote.put("trees/cd/cdef", src)
    assert site.read("trees/cd/cdef") == src.read_bytes()
    remote.put("blobs/ab/abc", b"replaced")  # action results are overwritten in place
    assert remote.get("blobs/ab/abc") == b"replaced"
    remote.close()


def test_download_streams_in_chunks(site):
    remote = site.open()
    remote.prepare()
    remote.put("blobs/00/big", os.urandom(1024) * (BIG // 1024))
    sizes: list[int] = []
    assert remote.download("blobs/00/big", lambda chunk: sizes.append(len(chunk))) is True
    assert sum(sizes) == BIG and len(sizes) > 1
    assert remote.download("blobs/00/none", sizes.append) is False


def _peak_python_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_objects_never_sit_in_memory(site, tmp_path):
    remote = site.open()
    remote.prepare()
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:
        for _ in range(BIG // (1024 * 1024)):
            fh.write(os.urandom(1024 * 1024))
    up = _peak_python_bytes(lambda: remote.put("blobs/bb/big", src))
    total = [0]
    down = _peak_python_bytes(lambda: remote.download("blobs/bb/big", lambda c: total.__setitem__(0, total[0] + len(c))))
    assert total[0] == BIG
    assert up < BIG // 2, f"upload held {up} bytes in Python memory"
    assert down < BIG // 2, f"download held {down} bytes in Python memory"


def test_s3_multipart_upload(s3_endpoint, aws_env, tmp_path, monkeypatch):  # noqa: F811
    """Files from MULTIPART_THRESHOLD on go up in parts (16 MiB each, the last one shorter)."""
    monkeypatch.setattr(S3Remote, "MULTIPART_THRESHOLD", 8 * 1024 * 1024)
    site = s3_site(s3_endpoint)
    src = tmp_path / "parts.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024 + 11))
    site.open().put("blobs/pp/parts", src)
    assert site.read("blobs/pp/parts") == src.read_bytes()


def test_webdav_put_creates_missing_collections(tmp_path):
    """Without `create_full_put_path`, nginx answers 409 to a PUT into a missing collection;
    the remote makes each missing parent with MKCOL and retries."""
    with nginx_dav(tmp_path) as server:
        remote = open_remote(f"{server.url}/a/b/store")
        remote.put("blobs/12/1234", b"deep")
        assert (server.root / "a/b/store/blobs/12/1234").read_bytes() == b"deep"
        remote.put("blobs/12/1235", b"sibling")  # the collection is known now
        assert remote.get("blobs/12/1235") == b"sibling"


def test_webdav_with_full_put_path(tmp_path):
    with nginx_dav(tmp_path, full_put_path=True) as server:
        remote = open_remote(f"{server.url}/x/store")
        remote.put("actions/ff/ffee", b"{}")
        assert (server.root / "x/store/actions/ff/ffee").read_bytes() == b"{}"


# -- failures ------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    assert isinstance(exc, (WorkFailed, UserError))
    line = exc.one_line()
    assert "\n" not in line and "Traceback" not in line
    return line


def test_http_unreachable():
    remote = open_remote(f"http://127.0.0.1:{free_port()}/store", name="lab")
    with pytest.raises(RemoteUnreachable) as info:
        remote.get("FORMAT")
    line = _one_line(info.value)
    assert "'lab'" in line and "127.0.0.1" in line and info.value.exit_code == 1


def test_s3_unreachable(aws_env):  # noqa: F811
    remote = open_remote({"url": "s3://bucket/p", "endpoint_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(RemoteUnreachable) as info:
        remote.exists("FORMAT")
    assert "cannot connect" in _one_line(info.value)


def test_http_auth_failure_and_netrc(dav_server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("SCI_HTTP_TOKEN", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    remote = open_remote(f"{dav_server.url}/private/store")
    with pytest.raises(RemoteAuthError) as info:
        remote.put("FORMAT", b"x")
    assert "401" in _one_line(info.value)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login sci password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    remote = open_remote(f"{dav_server.url}/private/store")
    remote.put("FORMAT", b"x")
    assert remote.get("FORMAT") == b"x"


def test_s3_auth_failure(tmp_path, aws_env):  # noqa: F811
    with moto_server(tmp_path, enforce_auth=True) as endpoint:
        remote = open_remote({"url": "s3://bucket/p", "endpoint_url": endpoint})
        with pytest.raises(RemoteAuthError) as info:
            remote.get("FORMAT")
        assert "access refused" in _one_line(info.value)
        with pytest.raises(RemoteAuthError):
            remote.put("FORMAT", b"x")


def test_s3_without_credentials(s3_endpoint, aws_env, monkeypatch):  # noqa: F811
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    remote = open_remote({"url": "s3://bucket/p", "endpoint_url": s3_endpoint})
    with pytest.raises(RemoteAuthError) as info:
        remote.get("FORMAT")
    assert "no AWS credentials" in _one_line(info.value)


def test_s3_missing_bucket(s3_endpoint, aws_env):  # noqa: F811
    remote = open_remote({"url": "s3://no-such-bucket-here/p", "endpoint_url": s3_endpoint})
    for op in (lambda: remote.get("FORMAT"), lambda: remote.exists("FORMAT"),
               lambda: remote.put("FORMAT", b"x")):
        with pytest.raises(RemoteNotFound) as info:
            op()
        assert "bucket 'no-such-bucket-here' does not exist" in _one_line(info.value)


def test_s3_endpoint_from_environment(s3_endpoint, aws_env, monkeypatch):  # noqa: F811
    site = s3_site(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    remote = open_remote(site.spec["url"])
    assert isinstance(remote, S3Remote) and remote.endpoint_url == s3_endpoint
    remote.put("FORMAT", b"via env")
    assert site.read("FORMAT") == b"via env"


def test_missing_directory_remote(tmp_path):
    remote = open_remote(tmp_path / "nowhere")
    with pytest.raises(RemoteNotFound) as info:
        remote.get("FORMAT")
    assert "does not exist" in _one_line(info.value)
    remote.prepare()  # what push does first: now it exists, and misses are plain misses
    assert remote.get("FORMAT") is None


def test_paths_cannot_leave_the_root(tmp_path):
    remote = open_remote(tmp_path)
    for bad in ("../escape", "/abs", "blobs//x", "blobs/./x", ""):
        with pytest.raises(ValueError):
            remote.put(bad, b"x")


# -- naming remotes ------------------------------------------------------------------------
def test_open_remote_kinds(tmp_path, aws_env):  # noqa: F811
    assert isinstance(open_remote(str(tmp_path)), DirectoryRemote)
    file_remote = open_remote(f"file://{tmp_path}/r")
    assert isinstance(file_remote, DirectoryRemote) and file_remote.root == tmp_path / "r"
    rel = open_remote("../cache", base_dir=tmp_path / "ws")
    assert rel.root == tmp_path / "ws" / ".." / "cache"
    assert isinstance(open_remote("s3://b/p"), S3Remote)
    assert isinstance(open_remote("https://example.org/store"), HttpRemote)


@pytest.mark.parametrize("spec, fragment", [
    ("ftp://host/x", "unknown URL kind"),
    ({"url": "s3://b/p", "aws_secret_access_key": "x"}, "would store a credential"),
    ({"url": "s3://b/p", "endpont_url": "x"}, "unknown key"),
    ({"endpoint_url": "http://x"}, "has no `url`"),
    ({"url": "/tmp/x", "endpoint_url": "http://x"}, "apply to s3:// only"),
    ("http://user:pw@host/x", "must not be written in the URL"),
    ("s3:///prefix", "names no bucket"),
])
def test_bad_remote_specs_are_user_errors(spec, fragment):
    with pytest.raises(RemoteConfigError) as info:
        open_remote(spec, name="lab")
    assert fragment in _one_line(info.value) and info.value.exit_code == 2


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_gs_without_gcsfs_says_what_to_install():
    with pytest.raises(RemoteConfigError) as info:
        open_remote("gs://bucket/prefix")
    assert "gcsfs" in _one_line(info.value)


def test_select_remote():
    remotes = {"default": "s3://a/b", "lab": "/mnt/cache"}
    assert select_remote(remotes, environ={}) == ("default", "s3://a/b")
    assert select_remote(remotes, environ={"SCI_REMOTE": "/env"}) == ("default", "/env")
    assert select_remote(remotes, "lab", environ={"SCI_REMOTE": "/env"}) == ("lab", "/mnt/cache")
    assert select_remote(None, environ={}) is None
    assert select_remote(None, environ={"SCI_REMOTE": "/env"}) == ("default", "/env")
    with pytest.raises(RemoteConfigError, match="no remote named 'labb'"):
        select_remote(remotes, "labb", environ={})
    with pytest.raises(RemoteConfigError, match="no default remote"):
        select_remote({}, "default", environ={})


# -- properties ----------------------------------------------------------------------------
prop_settings = settings(max_examples=30, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])
names = st.from_regex(r"[0-9a-f]{2}/[0-9a-f]{4,16}", fullmatch=True)


@prop_settings
@given(name=names, data=st.binary(max_size=4096))
def test_directory_round_trip_property(tmp_path, name, data):
    remote = open_remote(tmp_path / "prop")
    remote.prepare()
    remote.put(f"blobs/{name}", data)
    assert remote.get(f"blobs/{name}") == data and remote.exists(f"blobs/{name}")
    assert not list((tmp_path / "prop" / "tmp").iterdir())  # no temp file left behind


@prop_settings
@given(name=names, data=st.binary(max_size=4096))
def test_fsspec_round_trip_property(name, data):
    import fsspec

    remote = FsspecRemote(fsspec.filesystem("memory"), "/sci-prop", url="memory://sci-prop", name="m")
    assert remote.get(f"blobs/{name}x") is None
    remote.put(f"blobs/{name}", data)
    assert remote.get(f"blobs/{name}") == data and remote.exists(f"blobs/{name}")


def test_fsspec_streams_files(tmp_path):
    import fsspec

    remote = FsspecRemote(fsspec.filesystem("memory"), "/sci-files", url="memory://sci-files", name="m")
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    remote.put("blobs/aa/f", src)
    chunks: list[bytes] = []
    assert remote.download("blobs/aa/f", chunks.append)
    assert b"".join(chunks) == src.read_bytes() and len(chunks) > 1


def test_directory_site_helper_sees_what_remote_wrote(tmp_path):
    site = directory_site(tmp_path / "r")
    remote = site.open()
    remote.put("FORMAT", b"sci-store 1\n")
    assert site.read("FORMAT") == b"sci-store 1\n"
    assert Path(tmp_path / "r" / "FORMAT").stat().st_mode & 0o222 == 0  # read-only, like the store
