"""The results database (SQLAlchemy): one row per validation run, one per (run, batch size).

Any SQLAlchemy URL works (SQLite embedded by default, PostgreSQL in deployment). Writes are idempotent
upserts on natural keys: recording the same run twice leaves exactly one set of rows. "The same run" is its
``run_uid`` (made once per run, shared by its retries): a run name that another run recorded is refused.

The schema is versioned with Alembic (``twins_tasks/migrations``). Opening a database whose schema is older
upgrades it in place, keeping every row (a new database is created and stamped at the newest revision);
``twins results --upgrade [--url URL]`` does only that, as one explicit command for deployments.
Call :meth:`ResultsStore.check_writable` (and :meth:`ResultsStore.check_run_key`) before long work: a read-only,
damaged or unreachable database, or a taken run name, then fails first, not after hours of compute.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker
from sqlalchemy.pool import NullPool

from .errors import InputError
from .migrations import BASE_REVISION, SCRIPT_LOCATION

log = logging.getLogger(__name__)

URL_ENV = "TWINS_RESULTS_URL"
_SCHEMA_LOCK_KEY = 0x7477696E73  # "twins": the PostgreSQL advisory lock taken while the schema changes
DEFAULT_SQLITE_NAME = "twins_results.db"


class Base(DeclarativeBase):
    pass


class ValidationRun(Base):
    __tablename__ = "validation_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_key: Mapped[str] = mapped_column(String(250), unique=True)  # Airflow run_id, or the CLI's run name
    source: Mapped[str] = mapped_column(String(50), default="cli")  # "airflow:<dag_id>" or "cli"
    config_key: Mapped[str] = mapped_column(String(64), index=True)  # same key = comparable runs
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    model_name: Mapped[str] = mapped_column(String(100))
    weights: Mapped[str] = mapped_column(String(500))  # "checkpoint <path> sha256=…" or "random-init seed=S"
    random_init: Mapped[bool] = mapped_column(Boolean, default=False)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    onnx_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    opset: Mapped[int | None] = mapped_column(Integer, nullable=True)
    export_parity: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    backend: Mapped[str] = mapped_column(String(50))
    device: Mapped[str | None] = mapped_column(String(250), nullable=True)
    soc_version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    dataset_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    num_images: Mapped[int | None] = mapped_column(Integer, nullable=True)
    versions: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="success")
    regression_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    report_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    # Revision 0002 (issue 10): all nullable, so rows recorded before it stay valid.
    num_skipped: Mapped[int | None] = mapped_column(Integer, nullable=True)  # images --skip-bad left out
    skipped_images: Mapped[list | None] = mapped_column(JSON, nullable=True)  # their names (capped)
    failed_batch_sizes: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {"bs": "why"} of a partial run
    regression_details: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # what was compared, and why
    # Revision 0003 (issue 17): the run's identity, shared by its retries (see record_run); NULL before 0003.
    run_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)

    batches: Mapped[list[BatchResult]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="BatchResult.batch_size"
    )


class BatchResult(Base):
    __tablename__ = "batch_result"
    __table_args__ = (UniqueConstraint("run_id", "batch_size", name="uq_batch_result_run_batch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("validation_run.id", ondelete="CASCADE"), index=True)
    batch_size: Mapped[int] = mapped_column(Integer)
    artifact: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    compile_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    compile_cached: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    infer_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    infer_throughput: Mapped[float | None] = mapped_column(Float, nullable=True)
    perf_loop: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_min_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_max_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_mean_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_median_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_p99_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    throughput: Mapped[float | None] = mapped_column(Float, nullable=True)
    top1: Mapped[float | None] = mapped_column(Float, nullable=True)
    top5: Mapped[float | None] = mapped_column(Float, nullable=True)
    num_images: Mapped[int | None] = mapped_column(Integer, nullable=True)
    num_missing: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agreement_top1: Mapped[float | None] = mapped_column(Float, nullable=True)
    agreement_max_abs_diff: Mapped[float | None] = mapped_column(Float, nullable=True)
    agreement_images: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Revision 0002 (issue 10): all nullable, so rows recorded before it stay valid.
    status: Mapped[str | None] = mapped_column(String(20), nullable=True)  # "ok" | "failed"
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why a failed batch size failed
    device: Mapped[str | None] = mapped_column(String(250), nullable=True)  # the chip that ran it
    perf_rounds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    throughput_min: Mapped[float | None] = mapped_column(Float, nullable=True)
    throughput_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    throughput_cv: Mapped[float | None] = mapped_column(Float, nullable=True)  # stdev / mean over the rounds
    throughput_rounds: Mapped[list | None] = mapped_column(JSON, nullable=True)  # img/s of each round
    # Revision 0005 (issue 19): the chips of the inference, which may be split over several (``device``: perf's).
    infer_device: Mapped[str | None] = mapped_column(String(1000), nullable=True)

    run: Mapped[ValidationRun] = relationship(back_populates="batches")


class RunMark(Base):
    """A person's mark on a run (revision 0004, issue 18): ``accept`` (the new normal: a reference window starts
    there) or ``exclude`` (out of every reference). One row per mark, never updated: the latest one counts, and
    the rows are the record of who marked what, when and why (queries: :mod:`twins_tasks.history`)."""

    __tablename__ = "run_mark"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("validation_run.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(20))  # "accept" | "exclude"
    marked_by: Mapped[str] = mapped_column(String(250))
    marked_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    why: Mapped[str] = mapped_column(Text)


RUN_FIELDS = [c.name for c in ValidationRun.__table__.columns if c.name not in ("id", "recorded_at")]
BATCH_FIELDS = [c.name for c in BatchResult.__table__.columns if c.name not in ("id", "run_id")]


def default_url(home: str | os.PathLike | None = None) -> str:
    """``$TWINS_RESULTS_URL``, else a SQLite file in ``home`` (default: the current directory)."""
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    return f"sqlite:///{Path(home or '.').resolve() / DEFAULT_SQLITE_NAME}"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database, an in-memory one, or a URL that does not parse."""
    try:
        parsed = make_url(_normalized(url))
    except Exception:  # ResultsStore says what is wrong with it
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("mode") == "memory":
        return None
    database = parsed.database or ""
    if database.startswith("file:"):  # sqlite:///file:<path>?mode=ro&uri=true
        database = database.removeprefix("file:")
    return Path(database) if database and database != ":memory:" else None


def _with_driver(url: str) -> str:
    """Airflow renders PostgreSQL Connections as ``postgres://``/``postgresql://``; SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3. Use whichever driver is installed (psycopg2 ships with the project)."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgres", "postgresql"):
        import importlib.util

        driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
        return f"postgresql+{driver}{sep}{rest}"
    return url


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme, userinfo, host and the rest)`` of a URL with a ``user[:password]@`` part, else None.

    A host never holds an ``@``, so the userinfo ends at the first ``@`` after which the host has none: a
    password with an unencoded ``@`` stays whole (SQLAlchemy alone ends it at its first ``@`` and takes the
    rest of the password for the host, which then shows up in messages).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or rest.startswith("/"):  # sqlite:///path: no authority, an "@" there is part of the path
        return None
    at = rest.find("@")
    while at != -1:
        if "@" not in re.split(r"[/?]", rest[at + 1 :], maxsplit=1)[0]:
            return scheme, rest[:at], rest[at + 1 :]
        at = rest.find("@", at + 1)
    return None


def _normalized(url: str) -> str:
    """The URL with any ``@`` of its userinfo percent-encoded, so that SQLAlchemy parses the password whole."""
    parts = _split_userinfo(url)
    if parts is None or "@" not in parts[1]:
        return url
    scheme, userinfo, rest = parts
    return f"{scheme}://{userinfo.replace('@', '%40')}@{rest}"


def _passwords(url: str) -> list[str]:
    """The password as written in the URL and as decoded, longest first: the texts messages must never hold."""
    found = set()
    parts = _split_userinfo(url)
    if parts is not None and ":" in parts[1]:
        found.add(parts[1].partition(":")[2])
    with contextlib.suppress(Exception):  # a URL that does not parse: the written form is all there is
        found.add(make_url(url).password or "")
    return sorted((p for p in found if p), key=len, reverse=True)


def _hide(message: str, url: str) -> str:
    """``message`` with the URL's password replaced by ``***`` wherever it appears (e.g. in a driver's error)."""
    for password in _passwords(url):
        message = message.replace(password, "***")
    return message


def _shown(url: str) -> str:
    """The URL for messages, password hidden even when the URL does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        parts = _split_userinfo(url)
        if parts is not None:  # e.g. a port that is not a number: show the rest, never the password
            scheme, userinfo, rest = parts
            user = userinfo.partition(":")[0]
            return f"{scheme}://{user}:***@{rest}"
        scheme, sep, rest = url.partition("://")
        return f"{scheme}://{rest}" if sep else "(not a URL)"  # no "@": no password in it


def new_run_id(prefix: str = "cli", now: dt.datetime | None = None) -> str:
    """A run id that two runs started in the same second never share: ``<prefix>__<UTC time>_<12 hex>``.

    The time keeps ids sortable and readable; 48 random bits make a clash even among a thousand same-second
    runs a one-in-a-hundred-million event (24 bits clashed 3% of the time there), and the run folder is
    created exclusively (:func:`twins_tasks.files.create_run_dir`), so even that clash fails loudly instead of
    sharing a folder.
    """
    now = now or dt.datetime.now(dt.UTC)
    return f"{prefix}__{now:%Y%m%dT%H%M%S}_{secrets.token_hex(6)}"


def new_run_uid() -> str:
    """A run's identity (``run_uid``): made once per run, shared by every retry of its steps."""
    return secrets.token_hex(16)


RUN_UID_FILE = "run_uid"  # in the run folder: the identity every attempt of the DAG's plan reads back


def folder_run_uid(run_dir: str | os.PathLike) -> str:
    """The identity of the run whose folder ``run_dir`` is: made on the first call, read back by every later one.

    A retried or cleared ``plan`` of the same Airflow run (same deployment, same work folder) gets the identity
    the run already recorded; another deployment's run of the same run id, with its own work folder, gets its own.
    """
    path = Path(run_dir) / RUN_UID_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                found = path.read_text().strip()
            except FileNotFoundError:
                # Written whole under a temporary name, then linked into place unless another attempt got there
                # first (then the next pass reads that one's identity).
                temporary = path.with_name(f".{RUN_UID_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
                temporary.write_text(new_run_uid() + "\n")
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, path)
                temporary.unlink()
                continue
            if re.fullmatch(r"[0-9a-f]{32}", found):
                return found
            log.warning("Replacing %s, which holds no run identity (%r)", path, found[:40])
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot keep the run's identity in its run folder {path.parent}: {exc.strerror or exc}; make the work "
            f"folder writable"
        ) from exc
    raise InputError(f"{path} keeps changing under this run: is another process writing it? Remove it and retry")


def _when(value: dt.datetime | None) -> str:
    """A recorded time for messages, in UTC (SQLite hands back the naive UTC time it was given)."""
    if value is None:
        return "at an unknown time"
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return f"on {value:%Y-%m-%d at %H:%M:%S} UTC"


def _damaged(path: Path, reason: str) -> str:
    """What to do about a SQLite file whose pages SQLite cannot read."""
    recovered = path.with_name(f"{path.name}.recovered")
    return (
        f"the results database file {path} is damaged or not a SQLite database ({reason}). If it is the right "
        f"file, move it aside and restore it from a backup, or salvage what it still holds with "
        f"`sqlite3 {path} .recover | sqlite3 {recovered}` and use that file (--results-url, ${URL_ENV} or the "
        f"Airflow Connection twins_results)"
    )


def _report_damage(engine: Engine, path: Path) -> None:
    """Any statement on ``engine`` that finds the file damaged fails as an :class:`InputError` saying what to do
    (``twins results``, a record after hours of compute), not as a ``DatabaseError`` traceback."""

    @event.listens_for(engine, "handle_error")
    def _damaged_file(context: Any) -> None:
        name = getattr(context.original_exception, "sqlite_errorname", "") or ""
        if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB":
            raise InputError(_damaged(path, str(context.original_exception)))


def _reason(exc: DBAPIError, url: str) -> str:
    """The driver's first line (e.g. 'attempt to write a readonly database'), without SQLAlchemy's SQL dump,
    and without the password of ``url`` should the driver quote it."""
    lines = str(exc.orig).strip().splitlines() if exc.orig else []
    return _hide(lines[0] if lines else str(exc), url)


def _alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The schema revision this code writes (the newest migration)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "twins_tasks/migrations/versions holds no revision"
    return head


def _parse_time(value: Any) -> Any:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


class ResultsStore:
    """Record and query validation results. The schema is created on first use."""

    def __init__(self, url: str | None = None) -> None:
        self.url = _with_driver(_normalized(url or default_url()))
        where = (
            f"(from --results-url, ${URL_ENV} or the Airflow Connection twins_results; e.g. "
            f"sqlite:////abs/path/{DEFAULT_SQLITE_NAME} or postgresql://user:password@host:5432/db)"
        )
        try:
            self.engine = create_engine(self.url, future=True, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise InputError(
                f"results database URL {_shown(self.url)} is not usable: {_hide(str(exc), self.url)} {where}"
            ) from exc
        except ValueError as exc:  # make_url's int(port): ":notaport", or an IPv6 host without its "]"
            raise InputError(
                f"results database URL {_shown(self.url)} is not usable: its host and port do not parse (the "
                f"port must be a number, and an IPv6 host needs both brackets, as in "
                f"postgresql://user:password@[::1]:5432/db) {where}"
            ) from exc
        self._where = where
        database_file = sqlite_file(self.url)
        if database_file is not None:
            _report_damage(self.engine, database_file)
        # (from, to) when this open changed the schema; from is None for a database created just now.
        self.schema_change: tuple[str | None, str] | None = None
        try:
            self.schema_change = self._ensure_schema()
        except BaseException as exc:
            self.engine.dispose()  # no pooled connection (an open SQLite file) outlives a store that failed to open
            if not isinstance(exc, DBAPIError):  # server down, wrong credentials, SQLite file in a missing folder
                raise
            raise InputError(
                f"cannot open the results database {self.describe()}: {_reason(exc, self.url)}. Check the URL "
                f"{where} and that the database server is running and reachable (and, for SQLite, that "
                f"the file and its folder are writable)"
            ) from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _ensure_schema(self) -> tuple[str | None, str] | None:
        """Bring the schema to the head revision in one transaction; return (from, to) if it changed anything.

        A new database gets the tables and is stamped at head; a database made before Alembic managed the
        schema (tables, no ``alembic_version``) is stamped at the base revision and upgraded; an older
        revision is upgraded. Upgrades add (nullable columns, tables, indexes); the one that rewrites rows
        (0004) recomputes configuration keys the earlier code derived, keeping each run's history together.
        """
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        head = head_revision()
        if self.schema_revision() == head:  # the nightly case: no lock, one small query
            return None
        # Two runs opening one new (or old) database at once must not both create or upgrade it.
        with self._schema_lock(), self._schema_engine() as engine, engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # held until this transaction ends; DDL is transactional
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head:  # another process did it while this one waited
                return None
            config = _alembic_config(conn)
            if current is not None:
                try:
                    ScriptDirectory.from_config(config).get_revision(current)
                except CommandError:
                    raise InputError(
                        f"results database {self.describe()} has schema revision {current!r}, which this "
                        f"twins_tasks does not know (its newest is {head!r}): it was written by a newer version; "
                        f"upgrade twins_tasks, or use another database"
                    ) from None
            if current is None and not inspect(conn).has_table(ValidationRun.__tablename__):
                Base.metadata.create_all(conn)
                command.stamp(config, head)
                log.info("Created the results schema (revision %s) in %s", head, self.describe())
                return None, head
            if current is None:  # made by the first release, before Alembic
                command.stamp(config, BASE_REVISION)
            command.upgrade(config, head)
            was = current or f"{BASE_REVISION} (pre-Alembic)"
            log.warning(
                "Upgraded the results database %s from schema revision %s to %s (rows kept)", self.describe(), was, head
            )
            return was, head

    @contextlib.contextmanager
    def _schema_engine(self) -> Iterator[Engine]:
        """The engine a schema change runs on: one whose transaction holds the DDL and the revision stamp alike.

        pysqlite opens a transaction only before INSERT/UPDATE/DELETE: each CREATE TABLE or ALTER TABLE before
        one commits alone, and a kill between them left columns added under the old stamp ("duplicate column
        name" at every later open). For a SQLite file, a separate engine takes over transaction control
        (SQLAlchemy's recipe for transactional DDL on SQLite), so the change commits whole or not at all; the
        store's own engine keeps pysqlite's usual behaviour. PostgreSQL's DDL is transactional as it is; an
        in-memory SQLite database must stay on the one engine that holds it.
        """
        path = sqlite_file(self.url) if self.engine.dialect.name == "sqlite" else None
        if path is None:
            yield self.engine
            return
        engine = create_engine(self.url, poolclass=NullPool)
        _report_damage(engine, path)

        @event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN (and no COMMIT) of its own

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock from the start: no upgrade of a stale read

        try:
            yield engine
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """For a SQLite file, an exclusive lock on ``<file>.schema-lock`` while the schema is created or upgraded.

        The change is one ``BEGIN IMMEDIATE`` transaction (:meth:`_schema_engine`), but SQLite's own wait for a
        write lock gives up after 5 s ("database is locked"); this lock waits for as long as another process's
        change takes. Where the lock file cannot be made (a read-only folder) no one can change the schema there.
        """
        database = make_url(self.url).database if self.engine.dialect.name == "sqlite" else None
        if not database or database == ":memory:" or database.startswith("file:"):
            yield
            return
        import fcntl

        try:
            handle = open(f"{database}.schema-lock", "a")
        except OSError:
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()  # releases the lock

    def schema_revision(self) -> str | None:
        """The revision the database is stamped with (None: no ``alembic_version`` table)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check_writable(self) -> None:
        """Prove the database takes a run's results now, before hours of compute that it must keep.

        Does what :meth:`record_run` will do, in a transaction it rolls back: inserts a ``validation_run`` and a
        ``batch_result`` row (on PostgreSQL that needs USAGE on their id sequences as well as INSERT), updates
        one, deletes the other. A read-only SQLite file (or folder), a role lacking any of these rights or a
        server that went away fails here, as an :class:`InputError` naming the URL. A SQLite file is first
        checked for damaged pages (:meth:`check_integrity`): here, once per run, not at every open.
        """
        self.check_integrity()
        try:
            with self._sessions() as session:
                probe = ValidationRun(
                    run_key=f"twins-write-check-{secrets.token_hex(6)}",
                    source="write-check",
                    config_key="write-check",
                    config={},
                    model_name="write-check",
                    weights="write-check",
                    random_init=False,
                    backend="write-check",
                    versions={},
                    status="check",
                    recorded_at=dt.datetime.now(dt.UTC),
                )
                session.add(probe)
                session.flush()  # INSERT, and the id from the sequence
                session.add(BatchResult(run_id=probe.id, batch_size=1))
                session.flush()
                probe.status = "checked"  # a retried run's record updates its row...
                session.flush()
                session.execute(delete(BatchResult).where(BatchResult.run_id == probe.id))  # ...and drops stale rows
                session.rollback()  # nothing stays (a PostgreSQL sequence keeps its step: ids have a gap)
        except DBAPIError as exc:
            raise InputError(
                f"the results database {self.describe()} cannot be written: {_reason(exc, self.url)}. Nothing was "
                f"computed yet. Make it writable (for SQLite the file AND its folder: SQLite writes a journal "
                f"beside the file; for a server, the role's SELECT, INSERT, UPDATE and DELETE on the tables "
                f"validation_run and batch_result and USAGE on their id sequences), or give a writable database "
                f"{self._where}"
            ) from exc

    def check_integrity(self) -> None:
        """For a SQLite file, ``PRAGMA quick_check``: damaged pages behind an intact header fail now, as an
        :class:`InputError` saying how to restore or salvage the file, not as a ``DatabaseError`` after the compute.

        It reads every page (milliseconds for a results database), so runs call it once, at their start.
        """
        path = sqlite_file(self.url)
        if path is None:
            return
        try:
            with self.engine.connect() as conn:
                problems = [str(row[0]) for row in conn.exec_driver_sql("PRAGMA quick_check(3)")]
        except InputError as exc:  # damage that stops the check itself (see _report_damage)
            raise InputError(f"{exc}. Nothing was computed yet") from None
        if problems != ["ok"]:
            lines = [line.strip() for problem in problems for line in problem.splitlines()]
            found = "; ".join(line for line in lines if line and not line.startswith("***"))  # one line
            raise InputError(f"{_damaged(path, found)}. Nothing was computed yet")

    def describe(self) -> str:
        """The URL without its password, for logs."""
        return _shown(self.url)

    def check_run_key(self, run_key: str, run_uid: str | None) -> None:
        """Refuse, before any compute, a run name that another run already recorded (see :meth:`record_run`)."""
        with self._sessions() as session:
            row = session.scalar(select(ValidationRun).where(ValidationRun.run_key == run_key))
            if row is not None and row.run_uid != run_uid:
                raise self._taken(row, "Nothing was computed yet")

    def _taken(self, row: ValidationRun, outcome: str) -> InputError:
        """The run name ``row`` holds is taken by another run: who recorded it, when, and what to do."""
        whose = "" if row.run_uid else " (before runs carried an identity)"
        return InputError(
            f"run name {row.run_key!r} is already recorded in the results database {self.describe()} by another "
            f"run{whose}: source {row.source}, {_when(row.recorded_at)}; it is kept as it is. {outcome}. Choose "
            f"another run name (twins run --run-name; in Airflow, another run id), or use a results database of "
            f"this deployment's own (each Airflow deployment its own Connection twins_results)"
        )

    def record_run(self, run: dict[str, Any], batches: list[dict[str, Any]]) -> int:
        """Upsert a run (key ``run_key``) and its batch rows (key ``(run, batch_size)``); return the run id.

        Batch rows of this run that are not in ``batches`` are removed, so a re-run leaves exactly one set.
        Only the same run may replace a recorded one: ``run["run_uid"]`` must equal the recorded row's, else
        :class:`InputError` and nothing changes. Rows recorded before revision 0003 have no ``run_uid``; only a
        record without one (a retry of a run planned by an older twins_tasks) may replace them, so a new run
        never overwrites history recorded before run identities existed.
        """
        for attempt in (1, 2):
            try:
                return self._record(run, batches)
            except IntegrityError:
                # A concurrent writer inserted the same natural key first: the second pass updates it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _record(self, run: dict[str, Any], batches: list[dict[str, Any]]) -> int:
        unknown = set(run) - set(RUN_FIELDS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        with self._sessions.begin() as session:
            row = session.scalar(select(ValidationRun).where(ValidationRun.run_key == run["run_key"]))
            if row is None:
                row = ValidationRun(run_key=run["run_key"])
                session.add(row)
            elif row.run_uid != run.get("run_uid"):  # another run took the name first (e.g. while this one ran)
                raise self._taken(row, "This run's results were not recorded (its run folder keeps its outputs)")
            for key, value in run.items():
                setattr(row, key, _parse_time(value) if key.endswith("_at") else value)
            row.recorded_at = dt.datetime.now(dt.UTC)
            session.flush()
            existing = {
                b.batch_size: b for b in session.scalars(select(BatchResult).where(BatchResult.run_id == row.id))
            }
            for batch in batches:
                data = {k: v for k, v in batch.items() if k in BATCH_FIELDS}
                result = existing.pop(int(data["batch_size"]), None)
                if result is None:
                    result = BatchResult(run_id=row.id, batch_size=int(data["batch_size"]))
                    session.add(result)
                for key, value in data.items():
                    setattr(result, key, value)
            if existing:
                session.execute(delete(BatchResult).where(BatchResult.id.in_([b.id for b in existing.values()])))
            return row.id

    def update_run(self, run_key: str, **fields: Any) -> None:
        """Set some fields of a recorded run (``regression_status``, ``report_path``)."""
        unknown = set(fields) - set(RUN_FIELDS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        with self._sessions.begin() as session:
            row = session.scalar(select(ValidationRun).where(ValidationRun.run_key == run_key))
            if row is None:
                raise LookupError(f"no run {run_key!r} in {self.describe()}")
            for key, value in fields.items():
                setattr(row, key, value)

    def get_run(self, run_key: str) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.scalar(select(ValidationRun).where(ValidationRun.run_key == run_key))
            return _as_dict(row) if row else None

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._sessions() as session:
            rows = session.scalars(select(ValidationRun).order_by(ValidationRun.id.desc()).limit(limit)).all()
            return [_as_dict(r) for r in rows]

    def count_rows(self) -> tuple[int, int]:
        """(runs, batch results): for tests and health checks."""
        from sqlalchemy import func

        with self._sessions() as session:
            return (
                session.scalar(select(func.count()).select_from(ValidationRun)) or 0,
                session.scalar(select(func.count()).select_from(BatchResult)) or 0,
            )

    def update_batch(self, run_key: str, batch_size: int, **fields: Any) -> None:
        """Set some fields of one recorded batch row (the regression check records a re-measurement there)."""
        unknown = set(fields) - set(BATCH_FIELDS)
        if unknown:
            raise ValueError(f"unknown batch fields: {sorted(unknown)}")
        with self._sessions.begin() as session:
            row = session.scalar(
                select(BatchResult)
                .join(ValidationRun, BatchResult.run_id == ValidationRun.id)
                .where(ValidationRun.run_key == run_key, BatchResult.batch_size == batch_size)
            )
            if row is None:
                raise LookupError(f"no batch size {batch_size} of run {run_key!r} in {self.describe()}")
            for key, value in fields.items():
                setattr(row, key, value)


def _as_dict(row: ValidationRun) -> dict[str, Any]:
    data = {name: getattr(row, name) for name in ["id", *RUN_FIELDS, "recorded_at"]}
    data["batches"] = [{name: getattr(b, name) for name in BATCH_FIELDS} for b in row.batches]
    return data
