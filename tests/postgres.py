"""A real PostgreSQL 15 server for tests: ``initdb`` in a temp dir, ``pg_ctl start`` on loopback.

The server comes from the machine image (Debian's ``postgresql-15``: binaries in
``/usr/lib/postgresql/15/bin``, or wherever ``dpkg -L postgresql-15`` puts ``initdb``). It listens
on 127.0.0.1 on a free port, with its unix socket in its own temp dir; host connections need the
password (scram-sha-256), so a test's URL carries user and password as a deployment's does.
PostgreSQL refuses to run as root: as root, ``initdb``, ``pg_ctl`` and the server run as the
``postgres`` user (or ``nobody``) through ``setpriv`` (or ``runuser``), in a temp dir under
``/tmp`` that user owns (pytest's own temp dirs are root-only).

Anything that keeps the server from starting raises :class:`PostgresError` naming the step and
its output; the fixture turns that into a test failure, never a skip.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PG_MAJOR = 15
USER = "dagster"  # the server's superuser, the one every test connects as
DEFAULT_BIN_DIRS = (Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin"),)
START_TIMEOUT = 60
REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_INSTANCE_EXAMPLE = REPO_ROOT / "docs" / "deploy" / "dagster-postgres.yaml"


class PostgresError(RuntimeError):
    """The test server could not be found, initialised, started or reached."""


def find_bin_dir() -> Path:
    """The folder holding PostgreSQL 15's ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates = list(DEFAULT_BIN_DIRS)
    try:
        listed = subprocess.run(
            ["dpkg", "-L", f"postgresql-{PG_MAJOR}"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.splitlines()
        candidates = [Path(p).parent for p in listed if p.endswith("/bin/initdb")] + candidates
    except (FileNotFoundError, subprocess.TimeoutExpired):
        pass
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresError(
        f"PostgreSQL {PG_MAJOR} is not installed: no initdb/pg_ctl/postgres in "
        f"{', '.join(map(str, dict.fromkeys(candidates)))} (`dpkg -L postgresql-{PG_MAJOR}` lists none). "
        f"Install the Debian package postgresql-{PG_MAJOR}."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresError("running as root, and there is neither a `postgres` nor a `nobody` user to run PostgreSQL as")


def _drop_privileges(user: pwd.struct_passwd) -> list[str]:
    """A command prefix that runs the rest as ``user`` (PostgreSQL refuses to run as root)."""
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--"]
    raise PostgresError(f"running as root, and neither `setpriv` nor `runuser` is there to run PostgreSQL as {user.pw_name}")


@dataclass
class PostgresServer:
    """One running server: where it is, how to reach it, how to stop it."""

    bin_dir: Path
    base: Path  # temp dir holding data/, socket/, the logs; removed by stop()
    port: int
    password: str
    prefix: list[str] = field(default_factory=list)  # privilege drop, when running as root
    host: str = "127.0.0.1"
    user: str = USER
    running: bool = False

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def url(self, db_name: str, scheme: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL for ``db_name`` (SQLAlchemy 2.1's plain ``postgresql://`` wants psycopg 3)."""
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{db_name}"

    def env(self, db_name: str) -> dict[str, str]:
        """The variables ``docs/deploy/dagster-postgres.yaml`` reads, pointing at ``db_name``."""
        return {
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": db_name,
        }

    def connect(self, db_name: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=db_name, connect_timeout=10
        )

    def create_database(self, name: str) -> str:
        """A new, empty database ``name``; returns its name."""
        connection = self.connect()
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return name

    def query(self, db_name: str, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one query, on a connection of its own (what another host would see)."""
        connection = self.connect(db_name)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            connection.close()

    def _run(self, step: str, command: list[str], timeout: float) -> None:
        output = self.base / f"{step}.out"
        with output.open("wb") as out:  # a file, not a pipe: the server forked by pg_ctl must not hold it
            try:
                done = subprocess.run(
                    [*self.prefix, *command], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.base, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                    timeout=timeout, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise PostgresError(f"`{step}` did not finish within {timeout:.0f}s: {command}\n{self.log_tail()}") from None
        if done.returncode != 0:
            text = output.read_text(errors="replace")[-3000:]
            raise PostgresError(
                f"`{step}` failed ({done.returncode}): {' '.join(command)}\n{text}\n--- server log ---\n{self.log_tail()}"
            )

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.base / 'socket'}",
                "-c fsync=off",  # a throw-away test server
                "-c max_connections=200",  # dagster dev: webserver, daemon threads, code server, runs
            ]
        )
        command = [str(self.bin_dir / "pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT)]
        self._run("pg_ctl start", [*command, "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options], START_TIMEOUT + 10)
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its temp dir."""
        try:
            if self.running:
                pg_ctl = [str(self.bin_dir / "pg_ctl"), "stop", "-w", "-m", "fast", "-t", "60", "-D", str(self.data_dir)]
                self._run("pg_ctl stop", pg_ctl, 90)
                self.running = False
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(attempts: int = 3) -> PostgresServer:
    """``initdb`` a fresh cluster in a temp dir and start it on a free loopback port.

    Retries on another port when the chosen one was taken in between; raises
    :class:`PostgresError` with the failing step's output otherwise.
    """
    bin_dir = find_bin_dir()
    user = _unprivileged_user() if os.geteuid() == 0 else None
    prefix = _drop_privileges(user) if user else []
    base = Path(tempfile.mkdtemp(prefix="retrain-pg-", dir="/tmp"))
    password = secrets.token_hex(12)
    server = PostgresServer(bin_dir, base, 0, password, prefix)
    try:
        (base / "socket").mkdir()
        (base / "pwfile").write_text(password + "\n")
        if user:
            for path in (base, base / "socket", base / "pwfile"):
                os.chown(path, user.pw_uid, user.pw_gid)
        initdb = [
            str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", USER, f"--pwfile={base / 'pwfile'}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--locale=C", "--encoding=UTF8", "--no-sync",
        ]  # fmt: skip
        server._run("initdb", initdb, 120)
        for attempt in range(attempts):
            server.port = _free_port()
            try:
                server.start()
                break
            except PostgresError:
                in_use = "could not bind" in server.log_tail() or "already in use" in server.log_tail()
                if attempt + 1 == attempts or not in_use:
                    raise
        _wait_connectable(server)
        return server
    except BaseException:
        server.stop()
        raise


def _wait_connectable(server: PostgresServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.connect().close()
            return
        except Exception as exc:  # psycopg2.OperationalError while the server finishes starting
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"PostgreSQL started but does not accept connections on {server.host}:{server.port}: {exc}\n"
                    f"{server.log_tail()}"
                ) from exc
            time.sleep(0.3)


def merge(base: Mapping, overrides: Mapping) -> dict:
    """``overrides`` laid over ``base``, dicts merged at every depth."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def write_postgres_instance(home: Path, overrides: Mapping | None = None) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the guide's Postgres example (with ``overrides``).

    The example reads its connection from ``DAGSTER_PG_*`` variables (:meth:`PostgresServer.env`):
    whoever loads the instance must have them set.
    """
    config = yaml.safe_load(POSTGRES_INSTANCE_EXAMPLE.read_text())
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(merge(config, overrides or {}), sort_keys=False))
    return home
