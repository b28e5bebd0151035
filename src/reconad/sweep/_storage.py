"""Optuna storage plumbing: the database URL and its driver, opening the study with the
retries that workers racing to create the tables need, and the heartbeat settings.

Every trial process records a heartbeat in the storage every :func:`heartbeat_interval`
seconds; a running trial whose heartbeat is older than :func:`grace_period` belongs to a dead
worker (killed, out of memory, machine lost). Set ``RECONAD_SWEEP_GRACE_S`` to shorten the
grace period (tests) or lengthen it (a database that is sometimes unreachable for minutes).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from typing import Any

from reconad.errors import ReconadError

GRACE_ENV = "RECONAD_SWEEP_GRACE_S"
DEFAULT_GRACE_S = 120


def grace_period() -> int:
    """Seconds without heartbeat after which a running trial is stale (``RECONAD_SWEEP_GRACE_S``,
    default 120)."""
    text = os.environ.get(GRACE_ENV, "").strip()
    if not text:
        return DEFAULT_GRACE_S
    if not text.isdigit() or int(text) < 1:
        raise ReconadError(f"{GRACE_ENV}={text!r} must be a whole number of seconds, at least 1")
    return int(text)


def heartbeat_interval() -> int:
    """Seconds between two heartbeats of a running trial: a sixth of the grace period."""
    return max(1, grace_period() // 6)


def with_driver(url: str) -> str:
    """``postgresql://`` with the driver we install: SQLAlchemy 2.1 defaults to psycopg 3."""
    if url.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec(
            "psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """The storage URL without its password (it is printed in messages)."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':')[0]}:***@{tail}"


def lost_creation_race(exc: Exception) -> bool:
    """Whether opening a server storage failed because another worker created Optuna's tables
    at the same moment: a duplicate row (IntegrityError) or, in PostgreSQL, a duplicate table
    or enum type ("type studydirection already exists"); opening again then succeeds."""
    import sqlalchemy.exc

    return isinstance(exc, sqlalchemy.exc.IntegrityError) or (
        isinstance(exc, sqlalchemy.exc.ProgrammingError) and "already exists" in str(exc))


def _serialize_sqlite(engine) -> None:
    """Begin every SQLite transaction with ``BEGIN IMMEDIATE``: SQLite ignores ``SELECT ... FOR
    UPDATE``, so without it two workers can both read a queued trial as waiting and both run it
    (the SQLAlchemy recipe for pysqlite transactions)."""
    import sqlalchemy

    def no_implicit_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below

    def begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", no_implicit_begin)
    sqlalchemy.event.listen(engine, "begin", begin_immediate)
    engine.dispose()  # connections opened while creating the tables: reopened with the above


def create_or_load_study(url: str, *, study_name: str, sampler: Any, direction: str,
                         on_stale_trial: Callable[[Any, Any], None]):
    """Open (creating when needed) the Optuna study ``study_name`` in the database at ``url``,
    with heartbeats on; ``on_stale_trial(study, trial)`` runs for each trial found stale.

    Raises:
        ReconadError: the driver is missing or the database cannot be opened (the message
            shows the URL without its password).
    """
    import optuna
    import sqlalchemy.exc

    url = with_driver(url)
    sqlite = url.startswith("sqlite")
    shown = redact(url)
    for attempt in range(3):  # workers racing to create the tables may collide once
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else {},
                heartbeat_interval=heartbeat_interval(), grace_period=grace_period(),
                heartbeat_stale_trial_callback=on_stale_trial,
            )
            if sqlite:
                _serialize_sqlite(storage.engine)
            return optuna.create_study(storage=storage, study_name=study_name, sampler=sampler,
                                       direction=direction, load_if_exists=True)
        except ImportError:
            raise ReconadError(f"the storage {shown} needs a database driver that is not "
                               "installed; pip install psycopg2-binary (PostgreSQL) or the "
                               "driver your URL names") from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
            if attempt == 2 or not (sqlite or lost_creation_race(exc)):
                reason = str(exc).strip().splitlines()[0][:200]
                raise ReconadError(f"cannot open the sweep storage {shown} ({reason}); check the "
                                   "URL and that the database server is running") from None
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")
