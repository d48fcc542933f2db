"""PostgreSQL 15 of the production profile: one cluster under ``<data root>/services/postgres``.

PostgreSQL refuses to run as root: run as root, every server command runs as the OS user
``postgres`` (``runuser -u postgres --``), which must be able to traverse the directories above
the cluster (checked first, naming the directory it cannot); otherwise as the current user.

The cluster listens on 127.0.0.1 only, its unix socket lives in the cluster directory itself.
Administration goes over that socket with ``peer`` authentication (the OS user is the cluster's
superuser: no admin password exists); the application role (``prnf``, generated password) may
connect over TCP from 127.0.0.1 to the ``prefect`` and ``mlflow`` databases only
(``scram-sha-256``). ``pg_ctl`` starts the server in a session of its own (PostgreSQL ≥ 12) and
stops it with ``-m fast``.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from flows.services.credentials import Credentials
from flows.services.process import tail
from prnf_core.errors import ConfigError

DEFAULT_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASES = ("prefect", "mlflow")
CONF = "prnf.conf"
SOCKET_MAX = 107  # sun_path, less its terminating NUL


class PostgresError(ConfigError):
    """PostgreSQL could not be prepared, started or stopped; the message starts with
    ``postgres:``."""


def bin_dir() -> Path:
    """Where ``initdb``/``pg_ctl`` are: ``$PRNF_POSTGRES_BIN``, PostgreSQL 15's Debian
    directory, or the directory of ``pg_ctl`` on the PATH."""
    if os.environ.get("PRNF_POSTGRES_BIN"):
        return Path(os.environ["PRNF_POSTGRES_BIN"])
    if (DEFAULT_BIN / "pg_ctl").exists():
        return DEFAULT_BIN
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise PostgresError("postgres: pg_ctl not found; install PostgreSQL 15 (Debian: "
                        "postgresql-15 postgresql-contrib) or set PRNF_POSTGRES_BIN")


def os_user() -> str:
    """The OS user that runs the server: ``postgres`` when we are root, else ourselves."""
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def as_user(cmd: list) -> list[str]:
    cmd = [str(c) for c in cmd]
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def untraversable(path: Path, user: str) -> Path | None:
    """The first existing directory at or above ``path`` that ``user`` may not traverse
    (search permission), None if every one is traversable."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PostgresError(f"postgres: no OS user {user!r} to run PostgreSQL as (it refuses "
                            "to run as root); create it (useradd --system postgres)") from None
    gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for folder in reversed([Path(path), *Path(path).parents]):
        try:
            st = folder.stat()
        except FileNotFoundError:
            continue
        if entry.pw_uid == 0:
            continue
        if st.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


def _give(path: Path, mode: int) -> None:
    """Make ``path`` the server user's, with ``mode``."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)


def _run(cmd: list, what: str, timeout: float, log: Path | None = None,
         input: str | None = None) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(as_user(cmd), input=input, capture_output=True, text=True,
                              timeout=timeout, stdin=None if input is not None else
                              subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PostgresError(f"postgres: {what} took more than {timeout:.0f} s"
                            + (f"; log {log}:\n{tail(log)}" if log else "")) from None
    if done.returncode != 0:
        raise PostgresError(f"postgres: {what} failed (exit {done.returncode}):\n"
                            f"{(done.stdout + done.stderr).strip()[-3000:]}"
                            + (f"\n--- {log} ---\n{tail(log)}" if log else ""))
    return done


def prepare(data: Path, log: Path) -> None:
    """Create the cluster in ``data`` (once) and the server's log file ``log``.

    Raises:
        PostgresError: the server user cannot traverse a directory above ``data``, the socket
            path would be too long, or ``initdb`` failed.
    """
    user = os_user()
    blocked = untraversable(data.parent, user)
    if blocked is not None:
        raise PostgresError(
            f"postgres: the OS user {user!r} that runs PostgreSQL cannot enter {blocked} "
            f"(mode {stat.S_IMODE(blocked.stat().st_mode):04o}); allow it to traverse "
            f"(chmod o+x {blocked}) or choose another PRNF_DATA_ROOT")
    if len(str(data / ".s.PGSQL.65535")) > SOCKET_MAX:
        raise PostgresError(f"postgres: the socket path under {data} is longer than "
                            f"{SOCKET_MAX} characters; choose a shorter PRNF_DATA_ROOT")
    data.mkdir(parents=True, exist_ok=True)
    _give(data, 0o700)
    if not log.exists():
        log.touch()
    _give(log, 0o600)
    if not (data / "PG_VERSION").exists():
        _run([bin_dir() / "initdb", "-D", data, "--auth-local=peer", "--auth-host=reject",
              "-E", "UTF8", "--locale=C", "--no-instructions"], "initdb", timeout=300)
        hba = data / "pg_hba.conf"
        hba.write_text(
            "# written by prnf services: admin over the socket as the OS user, the\n"
            "# application role over loopback TCP to its two databases only\n"
            "local all all peer\n"
            f"host {','.join(DATABASES)} all 127.0.0.1/32 scram-sha-256\n")
        _give(hba, 0o600)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\ninclude_if_exists = '{CONF}'\n")


def start(data: Path, port: int, log: Path, timeout: float) -> int:
    """Start the server on 127.0.0.1:``port`` (socket in ``data``); return its pid."""
    conf = data / CONF
    socket_dir = str(data).replace("'", "''")
    conf.write_text("# written by prnf services up (each start)\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {int(port)}\n"
                    f"unix_socket_directories = '{socket_dir}'\n")
    _give(conf, 0o600)
    _run([bin_dir() / "pg_ctl", "-D", data, "-l", log, "-w", "-t", str(int(timeout)),
          "start"], "pg_ctl start", timeout=timeout + 30, log=log)
    return server_pid(data)


def server_pid(data: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid``, None without one."""
    try:
        return int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop(data: Path, timeout: float = 60.0) -> None:
    """``pg_ctl stop -m fast`` (nothing to do when the server is not running)."""
    if server_pid(data) is None:
        return
    _run([bin_dir() / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", str(int(timeout)),
          "stop"], "pg_ctl stop", timeout=timeout + 30)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def provision(data: Path, port: int, creds: Credentials) -> None:
    """The application role (its password set to the generated one on every start), the
    ``prefect`` database with ``pg_trgm`` and the ``mlflow`` database, both owned by it.
    Idempotent. The SQL goes on stdin: no secret on a command line."""
    role = creds.pg_user
    sql = [
        "\\set ON_ERROR_STOP on",
        f"SELECT 'CREATE ROLE \"{role}\" LOGIN' WHERE NOT EXISTS "
        f"(SELECT FROM pg_roles WHERE rolname = {_literal(role)})\\gexec",
        f"ALTER ROLE \"{role}\" LOGIN PASSWORD {_literal(creds.pg_password)};",
    ]
    for db in DATABASES:
        sql.append(f"SELECT 'CREATE DATABASE {db} OWNER \"{role}\"' WHERE NOT EXISTS "
                   f"(SELECT FROM pg_database WHERE datname = '{db}')\\gexec")
    sql += ["\\connect prefect", "CREATE EXTENSION IF NOT EXISTS pg_trgm;"]
    _run([bin_dir() / "psql", "-X", "-q", "-h", data, "-p", str(port), "-d", "postgres"],
         "creating the role and databases", timeout=120, input="\n".join(sql) + "\n")


def healthy(port: int, creds: Credentials, timeout: float = 3.0) -> bool:
    """Whether the application role can log in to the ``prefect`` database now."""
    import psycopg2

    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=creds.pg_user,
                                password=creds.pg_password, dbname="prefect",
                                connect_timeout=max(1, int(timeout)))
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    finally:
        conn.close()
