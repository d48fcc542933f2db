"""The profile's generated secrets: ``<data root>/services/credentials.env``, mode 0600.

Generated on the first ``prnf services up`` with :mod:`secrets`, written through a file that is
created with mode 0600 (never readable by others, not even for a moment) and renamed into
place. Nothing secret is in the repository; a file readable by group or others is refused.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from prnf_core.errors import ConfigError

PG_USER = "prnf"


@dataclass(frozen=True)
class Credentials:
    pg_user: str
    pg_password: str
    s3_access_key: str
    s3_secret_key: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(pg_user=PG_USER, pg_password=secrets.token_urlsafe(24),
                   s3_access_key="PRNF" + secrets.token_hex(8).upper(),
                   s3_secret_key=secrets.token_urlsafe(30))

    def as_env(self) -> dict[str, str]:
        return {"PRNF_PG_USER": self.pg_user, "PRNF_PG_PASSWORD": self.pg_password,
                "AWS_ACCESS_KEY_ID": self.s3_access_key,
                "AWS_SECRET_ACCESS_KEY": self.s3_secret_key}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a sibling created with mode 0600 (``O_EXCL``: never
    an existing file, never a wider mode, whatever the umask), then renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_create(path: Path) -> Credentials:
    """The credentials in ``path``, generated and written there (mode 0600) if it is missing.

    Raises:
        ConfigError: the file is readable or writable by group or others, or lacks a key.
    """
    path = Path(path)
    if not path.exists():
        creds = Credentials.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, "# prnf services: generated secrets, keep private (mode 0600)\n"
                      + "".join(f"{k}={v}\n" for k, v in creds.as_env().items()))
        return creds
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"credentials: {path} has mode {mode:04o}, readable by others; "
                          "make it 0600 (chmod 600) or delete it to generate new secrets")
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    try:
        return Credentials(values["PRNF_PG_USER"], values["PRNF_PG_PASSWORD"],
                           values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"])
    except KeyError as exc:
        raise ConfigError(f"credentials: {path} lacks {exc.args[0]}; delete it to generate "
                          "new secrets") from None
