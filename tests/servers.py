"""Real servers on 127.0.0.1 for the remote tests: moto's S3 server and nginx with WebDAV.

Each server is a child process the fixture starts on a free loopback port and stops at
teardown. A "site" is one remote location on a server (a directory, a bucket prefix, a URL
path) with back doors the tests use to play a damaged or hostile remote: read, overwrite and
delete objects without going through sci.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from sci.remote.stores import Remote, open_remote

START_TIMEOUT_S = 60  # a bound on waiting for a server to listen, not a measured duration


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port}: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def moto_server(workdir: Path, *, enforce_auth: bool = False) -> Iterator[str]:
    """moto's standalone S3-compatible server; yields its endpoint URL. With `enforce_auth`
    every request must carry a key moto knows — none does, so every request is refused."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if enforce_auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    log = workdir / f"moto-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        _wait_listening(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


@dataclass
class DavServer:
    url: str
    root: Path  # the document root: what a URL path names on disk


_NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        client_max_body_size 0;
        location / {{
            dav_methods PUT DELETE MKCOL;
            create_full_put_path {full_put_path};
            dav_access user:rw group:r all:r;
        }}
        location /private/ {{
            auth_basic "sci";
            auth_basic_user_file {prefix}/htpasswd;
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
        }}
    }}
}}
"""


@contextmanager
def nginx_dav(workdir: Path, *, full_put_path: bool = False) -> Iterator[DavServer]:
    """nginx with its WebDAV module, in the foreground, configured in `workdir`. Without
    `full_put_path` a PUT into a missing collection answers 409, so clients must MKCOL.
    Under /private/ it asks for Basic auth (user `sci`, password `secret`)."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx); needed for the WebDAV tests")
    port = free_port()
    prefix = workdir / f"nginx-{port}"
    root = prefix / "www"
    (root / "private").mkdir(parents=True)
    (prefix / "htpasswd").write_text("sci:{PLAIN}secret\n")
    conf = prefix / "nginx.conf"
    # As root the workers would switch to `nobody` and could not write the document root.
    conf.write_text(_NGINX_CONF.format(
        user="user root;" if os.geteuid() == 0 else "", prefix=prefix, port=port, root=root,
        full_put_path="on" if full_put_path else "off"))
    log = prefix / "error.log"
    log.touch()
    with open(log, "ab") as err:
        proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=prefix)
    try:
        _wait_listening(port, proc, log)
        yield DavServer(f"http://127.0.0.1:{port}", root)
    finally:
        _stop(proc)  # SIGTERM: nginx's fast shutdown, not waiting on idle keep-alive clients


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def dav_server(tmp_path_factory) -> Iterator[DavServer]:
    with nginx_dav(tmp_path_factory.mktemp("nginx")) as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch) -> None:
    """Test credentials in the standard variables (moto accepts any), and nothing else of AWS's
    from the environment."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@dataclass
class Site:
    """One remote location, reachable through sci (`open`) and behind its back (the rest)."""

    kind: str
    spec: object  # what open_remote takes
    read: Callable[[str], bytes | None]
    write: Callable[[str, bytes], None]
    delete: Callable[[str], None]

    def open(self, name: str = "default") -> Remote:
        return open_remote(self.spec, name=name)


def directory_site(root: Path) -> Site:
    def read(rel: str) -> bytes | None:
        path = root / rel
        return path.read_bytes() if path.exists() else None

    def write(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.chmod(0o644)
        path.write_bytes(data)

    return Site("dir", str(root), read, write, lambda rel: (root / rel).unlink())


def s3_site(endpoint: str) -> Site:
    client = s3_client(endpoint)
    bucket = f"sci-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)

    def read(rel: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key=f"cache/{rel}")["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    return Site("s3", {"url": f"s3://{bucket}/cache", "endpoint_url": endpoint}, read,
                lambda rel, data: client.put_object(Bucket=bucket, Key=f"cache/{rel}", Body=data),
                lambda rel: client.delete_object(Bucket=bucket, Key=f"cache/{rel}"))


def dav_site(server: DavServer) -> Site:
    prefix = f"sites/{uuid.uuid4().hex[:12]}/store"
    behind = directory_site(server.root / prefix)  # the files nginx serves for that URL path
    return Site("http", f"{server.url}/{prefix}", behind.read, behind.write, behind.delete)


@pytest.fixture(params=["dir", "s3", "http"])
def site(request, tmp_path) -> Site:
    """The same tests against each kind of remote: a directory, S3 (moto), WebDAV (nginx)."""
    if request.param == "dir":
        return directory_site(tmp_path / "remote")
    if request.param == "s3":
        request.getfixturevalue("aws_env")
        return s3_site(request.getfixturevalue("s3_endpoint"))
    return dav_site(request.getfixturevalue("dav_server"))
