"""Shared Optuna studies: open one on any database URL, with heartbeats that retry a dead worker's trial.

Several `tune` processes (one host or many) share a study through one relational database:
SQLite for one machine, PostgreSQL (or any URL SQLAlchemy and Optuna accept) for several.
Every running trial beats its heart into the database; a trial whose worker stopped beating
for `2 x heartbeat` seconds is failed by the next worker that looks, and a copy of it
(same parameters, same run folder) is queued again (Optuna's `RetryHeartbeatStaleTrialCallback`).
"""

from __future__ import annotations

import json
import time
import warnings

from dirtymnist.errors import ConfigError, DirtyMnistError

DEFAULT_HEARTBEAT = 60  # seconds between a running trial's heartbeats; stale after twice that
MAX_RETRY = 3  # a trial whose workers keep dying is given up after this many retries


class StorageError(DirtyMnistError):
    """The study database cannot be reached or refuses us."""


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparseable: never echo what might hold a password
        return "<storage URL>"


def open_storage(url: str, heartbeat: int = DEFAULT_HEARTBEAT):
    """An `optuna.storages.RDBStorage` on `url` with heartbeats and retries of stale trials.

    Bad input -> one-line errors: a malformed URL or a missing driver is a `ConfigError`, an
    unreachable server or refused credentials a `StorageError` naming the host (password hidden).
    """
    import optuna
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = safe_url(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"--storage {shown}: not a database URL "
                          "(e.g. sqlite:///study.db or postgresql://user:password@host/db)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        # several local workers take turns writing: wait for the lock rather than fail
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if backend == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": 10}  # a dead host fails in 10 s
    try:
        for attempt in range(3):
            try:
                with warnings.catch_warnings():  # heartbeats are marked experimental
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat),
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                            max_retry=MAX_RETRY))
                if backend == "sqlite":
                    _lock_sqlite_transactions(storage.engine)
                return storage
            except sqlalchemy.exc.IntegrityError:
                # two workers creating the tables of a new database at once: the loser finds
                # them made on its next try
                if attempt == 2:
                    raise
                time.sleep(1.0)
    except ImportError:
        driver = "'psycopg[binary]'" if backend == "postgresql" else f"a {backend} driver"
        raise ConfigError(f"--storage {shown}: the database driver is not installed "
                          f"(pip install {driver})") from None
    except sqlalchemy.exc.DBAPIError as exc:  # no server, refused credentials, no such database
        where = parsed.database if backend == "sqlite" else (
            f"host {parsed.host or 'localhost'}" + (f" port {parsed.port}" if parsed.port else ""))
        reason = _first_line(exc.orig if getattr(exc, "orig", None) is not None else exc)
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        raise StorageError(f"--storage {shown}: cannot open the study database on {where}: {reason}") from None


def _lock_sqlite_transactions(engine) -> None:
    """Every SQLite transaction takes the database's write lock when it begins.

    Optuna takes a queued trial with SELECT ... FOR UPDATE, which SQLite ignores: two local
    workers could both read it WAITING and both run it (seen with `--workers 2`). BEGIN
    IMMEDIATE makes the read-then-write atomic (SQLAlchemy's recipe for pysqlite).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own BEGIN

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners were set up are dropped


def _first_line(exc: BaseException) -> str:
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def check_space(study, space: dict, shown_url: str) -> None:
    """Record the search space in a new study; refuse a study created with another one."""
    space = json.loads(json.dumps(space))  # tuples -> lists, as the database returns them
    saved = study.user_attrs.get("search_space")
    if saved is None:
        study.set_user_attr("search_space", space)
        return
    if saved != space:
        raise ConfigError(f"study {study.study_name!r} in {shown_url} was created with another "
                          f"search space ({space_difference(saved, space)}); use the same --space "
                          "or another --study name")


def space_difference(saved: dict, new: dict) -> str:
    """One line: keys only in one of the spaces, and the ranges that differ."""
    parts = []
    for key in sorted(set(saved) | set(new)):
        if key not in new:
            parts.append(f"{key} only in the study")
        elif key not in saved:
            parts.append(f"{key} not in the study")
        elif saved[key] != new[key]:
            parts.append(f"{key}: study {_compact(saved[key])}, now {_compact(new[key])}")
    return "; ".join(parts)


def _compact(spec) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))
