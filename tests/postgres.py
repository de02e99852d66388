"""A throwaway PostgreSQL cluster for tests: `with throwaway_cluster() as url: ...`.

initdb into a fresh temp folder, a server on 127.0.0.1 at a free port (and a unix socket in
that folder), password authentication over TCP; stopped and deleted at the end. PostgreSQL
refuses to run as root, so as root the server runs as `nobody`. Where PostgreSQL is not
installed the caller skips, except in CI (CI=true), where that is a failure: `.ci/run`
installs Debian's `postgresql`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER, PASSWORD = "dm", "pw-not-in-messages"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the server tools off PATH, under /usr/lib/postgresql/<version>/bin
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def require_postgres() -> tuple[str, str]:
    """(initdb, pg_ctl), or skip (fail in CI) naming what is missing."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    reason = "PostgreSQL is not installed (no initdb/pg_ctl; Debian: apt-get install postgresql)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run should have installed it")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_cluster():
    initdb, pg_ctl = require_postgres()
    # as root, under /tmp: a TMPDIR inside /root would be closed to the server's user
    root = Path(tempfile.mkdtemp(prefix="dirtymnist-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        runuser = shutil.which("runuser")
        as_user = [runuser, "-u", "nobody", "--"] if runuser else None
    data, port = root / "data", free_port()
    pwfile = root / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)

    def run(*cmd: str) -> None:
        argv = [*as_user, *cmd] if as_user is not None else ["su", "nobody", "-s", "/bin/sh", "-c",
                                                              " ".join(map(_quote, cmd))]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=root, timeout=120)
        if proc.returncode:
            log = (root / "server.log").read_text()[-2000:] if (root / "server.log").exists() else ""
            raise RuntimeError(f"{cmd[0]} failed: {proc.stderr[-2000:]} {log}")

    try:
        run(initdb, "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
            "--auth-local=trust", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start", "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50")
        try:
            yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
