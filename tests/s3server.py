"""A real S3-API server on loopback for the tests: ``moto_server`` (moto[server] 5.x) as a subprocess.

:func:`start` launches ``moto_server`` from this environment's ``bin/`` on a free 127.0.0.1 port,
waits until it answers an S3 request and returns an :class:`S3Server`; ``stop()`` ends that process
(and only it). A server that cannot start fails the caller with its output, never a skip.

Credentials and the endpoint are not set here at import or globally: :meth:`S3Server.env` returns
the variables a test process sets for itself (``monkeypatch.setenv``), fake keys (``testing``) and
``AWS_ENDPOINT_URL_S3`` pointing at the server, which botocore (boto3, s3fs) reads.

The server is ``moto_server``'s own application served one request at a time (:data:`SERIAL`):
``moto_server`` serves threads, and moto checks ``If-Match`` / ``If-None-Match`` and then stores
the object without a lock, so concurrent conditional writes could both succeed there (seen: 34 of
40 increments kept). S3 makes the check and the write one step; serving serially gives the tests
that guarantee. Werkzeug then answers HTTP/1.0, one connection per request, so no client waits on
another's open connection.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT = 30.0  # seconds; moto_server starts in ~1-2 s here
SERIAL = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
app = DomainDispatcherApplication(create_backend_app)
run_simple(sys.argv[1], int(sys.argv[2]), app, threaded=False, request_handler=MotoRequestHandler)
"""


def moto_server_executable() -> Path:
    """``moto_server`` of the running interpreter's environment (.venv/bin)."""
    path = Path(sys.executable).parent / "moto_server"
    if not path.exists():
        raise RuntimeError(
            f"moto_server not found at {path}: the S3 tests need moto[server] in this environment "
            "(`make env` installs it from uv.lock)"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    log: Path

    def env(self) -> dict[str, str]:
        """What a test process sets to reach this server with fake credentials (never set globally)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            # never read ~/.aws of whoever runs the tests
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self):
        """A boto3 S3 client on this server (explicit endpoint and fake keys: no environment needed)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2) as response:  # ListBuckets
            return response.status == 200
    except urllib.error.HTTPError as exc:  # any S3 answer means the server is up
        return exc.code < 500
    except OSError:
        return False


def start(log_dir: Path, attempts: int = 3, executable: Path | None = None) -> S3Server:
    """Start ``moto_server`` (or ``executable``) on a free loopback port and wait until it answers.

    Raises:
        RuntimeError: It exited or did not answer within :data:`START_TIMEOUT` (its log attached).
    """
    executable = executable or moto_server_executable()
    failures = []
    for attempt in range(attempts):  # another process may take the free port before moto binds it
        port = free_port()
        log = Path(log_dir) / f"moto_server.{port}.log"
        with open(log, "wb") as out:
            command = [str(executable), "-H", "127.0.0.1", "-p", str(port)]
            if executable == moto_server_executable():  # moto's app, one request at a time (see above)
                command = [sys.executable, "-c", SERIAL, "127.0.0.1", str(port)]
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = S3Server(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(server.endpoint):
                return server
            time.sleep(0.1)
        server.stop()
        failures.append(f"attempt {attempt + 1} (port {port}, exit code {process.poll()}):\n{log.read_text()[-2000:]}")
    raise RuntimeError(
        f"moto_server ({executable}) did not start on 127.0.0.1 within {START_TIMEOUT:.0f} s:\n" + "\n".join(failures)
    )
