"""Start real local servers (PostgreSQL, Redis) for the test suite.

Every server listens on 127.0.0.1 only, on a free port chosen at run time, keeps its files in a fresh
temporary directory and is stopped (and its directory removed) by ``RunningService.stop()``; ``stop`` is
idempotent and is also registered with ``atexit`` so an aborted test run does not leave servers behind.

Environment overrides (use an existing server instead of starting one):

* ``VMS_TEST_POSTGRES_URL`` e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/vms_test``
* ``VMS_TEST_REDIS_URL``    e.g. ``redis://127.0.0.1:6379/0``

A missing binary raises :class:`ServiceUnavailable` naming the Debian package that installs it. Whether
that should skip or fail a test is the caller's choice; :func:`services_required` tells which (fail on CI).

Typical use (e.g. from ``conftest.py``)::

    try:
        pg = start_postgres()
    except ServiceUnavailable as exc:
        skip_or_fail(exc)
    with pg:
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

__all__ = [
    "RunningService",
    "ServiceUnavailable",
    "free_port",
    "running",
    "services_required",
    "skip_or_fail",
    "start_postgres",
    "start_redis",
]

DEFAULT_TIMEOUT = 30.0
PG_DATABASE = "vms_test"
PG_SUPERUSER = "postgres"
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class ServiceUnavailable(RuntimeError):
    """A server needed by the tests cannot be started (binary missing, wrong user, ...)."""


@dataclasses.dataclass
class RunningService:
    """A started (or externally provided) server. ``stop()`` is idempotent."""

    name: str
    url: str
    stop_fn: Callable[[], None] = dataclasses.field(repr=False, default=lambda: None)
    external: bool = False
    host: str = "127.0.0.1"
    port: int | None = None
    workdir: Path | None = None
    _stopped: bool = dataclasses.field(default=False, init=False, repr=False)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        self.stop_fn()

    def __enter__(self) -> RunningService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(start: Callable[[], RunningService]) -> Iterator[RunningService]:
    """``with running(start_redis) as redis: ...`` starts a service and always stops it."""
    service = start()
    try:
        yield service
    finally:
        service.stop()


def services_required() -> bool:
    """True on CI (``CI=true``) or with ``VMS_REQUIRE_SERVICES=1``: a missing service must fail, not skip."""
    return (
        os.environ.get("CI", "").strip().lower() == "true" or os.environ.get("VMS_REQUIRE_SERVICES", "").strip() == "1"
    )


def skip_or_fail(exc: BaseException) -> NoReturn:
    """Skip the current test because of ``exc``, or fail it when :func:`services_required`."""
    import pytest

    if services_required():
        pytest.fail(f"required service unavailable: {exc}", pytrace=False)
    pytest.skip(f"service unavailable: {exc}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the caller retries if it is taken before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _register(service: RunningService) -> RunningService:
    atexit.register(service.stop)
    return service


def _clean_env() -> dict[str, str]:
    """The current environment without libpq variables that could redirect our commands."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


# --------------------------------------------------------------------------------------------- PostgreSQL


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def _find_pg_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl, else the one on PATH."""
    candidates = sorted((Path(p) for p in glob.glob(PG_BIN_GLOB)), key=_version_key, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    raise ServiceUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under "
        f"{PG_BIN_GLOB} or on PATH; install them with: apt-get install -y postgresql"
    )


class _PgRunner:
    """Runs PostgreSQL commands as a user allowed to run the server (never as root)."""

    def __init__(self) -> None:
        self.as_root = os.geteuid() == 0
        self.prefix: list[str] = []
        self.user: str | None = None
        if not self.as_root:
            return
        try:
            pwd.getpwnam(PG_SUPERUSER)
        except KeyError:
            raise ServiceUnavailable(
                "running as root but there is no 'postgres' user to run the server as; "
                "install it with: apt-get install -y postgresql"
            ) from None
        runuser = shutil.which("runuser")
        if runuser:
            self.prefix = [runuser, "-u", PG_SUPERUSER, "--"]
        else:  # pragma: no cover - runuser is part of util-linux
            self.user = PG_SUPERUSER

    def chown(self, path: Path) -> None:
        if self.as_root:
            entry = pwd.getpwnam(PG_SUPERUSER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def run(self, argv: Sequence[str], *, cwd: Path, timeout: float, log: Path) -> subprocess.CompletedProcess[bytes]:
        # Output goes to a file, never to a pipe: the postmaster started by pg_ctl must not hold our pipe.
        group = pwd.getpwnam(self.user).pw_gid if self.user else None
        with open(log, "ab") as out:
            return subprocess.run(
                [*self.prefix, *argv],
                cwd=cwd,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                user=self.user,
                group=group,
                extra_groups=[] if self.user else None,
            )


def _pg_tmp_parent(runner: _PgRunner) -> str | None:
    """Where to create the cluster: the usual temp dir, unless the postgres user could not reach it."""
    if not runner.as_root:
        return None
    parent = Path(tempfile.gettempdir())
    reachable = all(os.stat(p).st_mode & 0o001 for p in (parent, *parent.parents))
    return None if reachable else "/tmp"


def _pg_conf(port: int, sockdir: Path) -> str:
    return (
        "\n# --- vms test settings ---\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{sockdir}'\n"
        "fsync = off\n"
        "full_page_writes = off\n"
        "synchronous_commit = off\n"
        "max_connections = 200\n"
        "logging_collector = off\n"
    )


def _kill_postmaster(datadir: Path) -> None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((datadir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


def start_postgres(timeout: float = DEFAULT_TIMEOUT) -> RunningService:
    """Start a throw-away PostgreSQL cluster and create database ``vms_test`` in it.

    Returns url ``postgresql+psycopg://postgres@127.0.0.1:PORT/vms_test``. With ``VMS_TEST_POSTGRES_URL``
    set, returns that url and starts nothing.
    """
    external = os.environ.get("VMS_TEST_POSTGRES_URL", "").strip()
    if external:
        return RunningService(name="postgres", url=external, external=True)

    bindir = _find_pg_bindir()
    createdb = bindir / "createdb"
    if not createdb.is_file():
        found = shutil.which("createdb")
        if not found:
            raise ServiceUnavailable("createdb not found; install it with: apt-get install -y postgresql-client")
        createdb = Path(found)
    runner = _PgRunner()

    workdir = Path(tempfile.mkdtemp(prefix="vms-pg-", dir=_pg_tmp_parent(runner)))
    datadir, sockdir, log = workdir / "data", workdir / "sock", workdir / "commands.log"
    server_log = workdir / "server.log"
    started = False

    def stop() -> None:
        try:
            if started:
                try:
                    result = runner.run(
                        [
                            str(bindir / "pg_ctl"),
                            "-D",
                            str(datadir),
                            "-m",
                            "immediate",
                            "-w",
                            "-t",
                            str(int(timeout)),
                            "stop",
                        ],
                        cwd=workdir,
                        timeout=timeout + 5,
                        log=log,
                    )
                    if result.returncode != 0:
                        _kill_postmaster(datadir)
                except subprocess.TimeoutExpired:
                    _kill_postmaster(datadir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    try:
        sockdir.mkdir()
        log.touch()
        for path in (workdir, sockdir, log):
            runner.chown(path)
        os.chmod(workdir, 0o700)

        result = runner.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-A",
                "trust",
                "-U",
                PG_SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=workdir,
            timeout=max(timeout, 60.0),
            log=log,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {result.returncode}):\n{_tail(log)}")

        deadline = time.monotonic() + timeout
        for _attempt in range(5):
            port = free_port()
            # Later settings override earlier ones, so a retry simply appends a new port.
            with open(datadir / "postgresql.conf", "a") as conf:
                conf.write(_pg_conf(port, sockdir))
            remaining = max(deadline - time.monotonic(), 5.0)
            try:
                result = runner.run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(datadir),
                        "-l",
                        str(server_log),
                        "-w",
                        "-t",
                        str(int(remaining)),
                        "start",
                    ],
                    cwd=workdir,
                    timeout=remaining + 5,
                    log=log,
                )
            except subprocess.TimeoutExpired:
                started = True  # something may be running: make stop() try to shut it down
                raise RuntimeError(f"PostgreSQL did not start in {remaining:.0f}s:\n{_tail(server_log)}") from None
            if result.returncode == 0:
                started = True
                break
            if "could not bind" in _tail(server_log) or "already in use" in _tail(server_log):
                with contextlib.suppress(OSError):
                    server_log.unlink()
                continue  # port taken between choosing and binding: try another one
            raise RuntimeError(f"pg_ctl start failed (exit {result.returncode}):\n{_tail(log)}\n{_tail(server_log)}")
        else:
            raise RuntimeError(f"PostgreSQL could not bind a free port:\n{_tail(server_log)}")

        # trust authentication over TCP: no need to run createdb as the postgres user
        proc = subprocess.run(
            [str(createdb), "-h", "127.0.0.1", "-p", str(port), "-U", PG_SUPERUSER, "-w", PG_DATABASE],
            cwd=workdir,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"createdb failed: {proc.stderr.decode(errors='replace')}")
    except BaseException:
        stop()
        raise

    return _register(
        RunningService(
            name="postgres",
            url=f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{port}/{PG_DATABASE}",
            stop_fn=stop,
            port=port,
            workdir=workdir,
        )
    )


# ------------------------------------------------------------------------------------------------- Redis


def _find_redis() -> str:
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceUnavailable("redis-server not found; install it with: apt-get install -y redis-server")


def _redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"+PONG")
    except OSError:
        return False


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def start_redis(timeout: float = DEFAULT_TIMEOUT) -> RunningService:
    """Start ``redis-server`` on 127.0.0.1 (no persistence); url ``redis://127.0.0.1:PORT/0``.

    With ``VMS_TEST_REDIS_URL`` set, returns that url and starts nothing.
    """
    external = os.environ.get("VMS_TEST_REDIS_URL", "").strip()
    if external:
        return RunningService(name="redis", url=external, external=True)

    binary = _find_redis()
    workdir = Path(tempfile.mkdtemp(prefix="vms-redis-"))
    log = workdir / "redis.log"
    proc: subprocess.Popen[bytes] | None = None

    def stop() -> None:
        try:
            if proc is not None:
                _terminate(proc)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    try:
        deadline = time.monotonic() + timeout
        for _attempt in range(5):
            port = free_port()
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--dir",
                        str(workdir),
                        "--protected-mode",
                        "yes",
                    ],
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            while time.monotonic() < deadline:
                if _redis_ping(port):
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
            if proc.poll() is None and _redis_ping(port):
                break
            exited = proc.poll() is not None
            _terminate(proc)
            output = _tail(log)
            if exited and "already in use" in output and time.monotonic() < deadline:
                continue  # port taken between choosing and binding: try another one
            if not exited:
                raise RuntimeError(f"redis-server did not answer PING within {timeout:.0f}s:\n{output}")
            raise RuntimeError(f"redis-server failed to start (exit {proc.returncode}):\n{output}")
        else:
            raise RuntimeError(f"redis-server could not bind a free port:\n{_tail(log)}")
    except BaseException:
        stop()
        raise

    return _register(
        RunningService(name="redis", url=f"redis://127.0.0.1:{port}/0", stop_fn=stop, port=port, workdir=workdir)
    )


@contextlib.contextmanager
def serve_in_thread(app: object, *, lifespan: str = "auto", start_timeout: float = 30.0) -> Iterator[str]:
    """``app`` (ASGI) served by uvicorn on a free loopback port in a thread of this process; its base URL. Stopped
    (bounded) when the block ends."""
    import threading

    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def interrupt(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Ctrl-C a foreground command (SIGINT, as a terminal sends it) and return what it printed; killed if it does
    not stop within ``timeout``."""
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""
