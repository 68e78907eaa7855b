"""Schema migrations of the results DB (Alembic): a database made by the first release is upgraded in place,
every row kept; new databases are stamped at head; writability is checked before any compute; run ids differ."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from twins_tasks.errors import InputError
from twins_tasks.migrations import BASE_REVISION
from twins_tasks.store import Base, ResultsStore, head_revision, new_run_id

ROOT = Path(__file__).resolve().parents[1]


def first_release_tables(metadata: sa.MetaData) -> None:
    """The tables exactly as store.py created them before Alembic (copied from that release, not imported)."""
    sa.Table(
        "validation_run",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_key", sa.String(250), nullable=False, unique=True),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("config_key", sa.String(64), nullable=False, index=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("weights", sa.String(500), nullable=False),
        sa.Column("random_init", sa.Boolean, nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64)),
        sa.Column("onnx_sha256", sa.String(64)),
        sa.Column("opset", sa.Integer),
        sa.Column("export_parity", sa.JSON),
        sa.Column("backend", sa.String(50), nullable=False),
        sa.Column("device", sa.String(250)),
        sa.Column("soc_version", sa.String(50)),
        sa.Column("dataset_path", sa.String(1000)),
        sa.Column("dataset_fingerprint", sa.String(64)),
        sa.Column("num_images", sa.Integer),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("regression_status", sa.String(20)),
        sa.Column("report_path", sa.String(1000)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "batch_result",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.ForeignKey("validation_run.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("batch_size", sa.Integer, nullable=False),
        *(sa.Column(name, sa.Float) for name in ("compile_seconds", "throughput", "top1", "top5")),
        sa.Column("num_images", sa.Integer),
        sa.Column("artifact", sa.String(1000)),
        sa.Column("compile_cached", sa.Boolean),
        *(
            sa.Column(name, sa.Float)
            for name in (
                "infer_seconds",
                "infer_throughput",
                "latency_min_ms",
                "latency_max_ms",
                "latency_mean_ms",
                "latency_median_ms",
                "latency_p99_ms",
                "agreement_top1",
                "agreement_max_abs_diff",
            )
        ),
        *(sa.Column(name, sa.Integer) for name in ("perf_loop", "num_missing", "agreement_images")),
        sa.UniqueConstraint("run_id", "batch_size", name="uq_batch_result_run_batch"),
    )


def _fill_first_release(url: str) -> dict[str, list]:
    """A database as the first release left it: its tables, no alembic_version, three runs and five batches."""
    engine = sa.create_engine(_driver(url))
    metadata = sa.MetaData()
    first_release_tables(metadata)
    metadata.create_all(engine)
    runs, batches = metadata.tables["validation_run"], metadata.tables["batch_result"]
    when = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)
    with engine.begin() as conn:
        ids = []
        for i in range(3):
            # No explicit ids: PostgreSQL's sequence must move on as it did for the first release's inserts.
            result = conn.execute(
                runs.insert().values(
                    run_key=f"old-{i}",
                    source="cli",
                    config_key="cfg",
                    config={"limit": 32, "batch_sizes": [1, 4]},
                    model_name="twins_svt_large",
                    weights="random-init seed=0",
                    random_init=True,
                    backend="onnxruntime",
                    device="CPU",
                    versions={"torch": "2.14.1"},
                    status="success",
                    regression_status="passed" if i else None,
                    recorded_at=when + dt.timedelta(days=i),
                )
            )
            ids.append(result.inserted_primary_key[0])
        for run, bs, tp in ((0, 1, 9.5), (0, 4, 10.5), (1, 1, 9.6), (1, 4, 10.4), (2, 4, 10.6)):
            conn.execute(batches.insert().values(run_id=ids[run], batch_size=bs, throughput=tp, top1=0.1, perf_loop=20))
    with engine.connect() as conn:
        snapshot = {
            name: [tuple(row) for row in conn.execute(sa.select(table).order_by(table.c.id))]
            for name, table in (("validation_run", runs), ("batch_result", batches))
        }
    engine.dispose()
    return snapshot


def _driver(url: str) -> str:
    from twins_tasks.store import _with_driver

    return _with_driver(url)


def _assert_upgraded_keeping_rows(url: str) -> None:
    before = _fill_first_release(url)
    store = ResultsStore(url)  # opening it upgrades it
    assert store.schema_change == (f"{BASE_REVISION} (pre-Alembic)", head_revision())
    assert store.schema_revision() == head_revision()
    # Every old row and value is still there, column for column.
    engine = store.engine
    old = sa.MetaData()
    first_release_tables(old)
    with engine.connect() as conn:
        for name, rows in before.items():
            table = old.tables[name]
            assert [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))] == rows
    # The schema now equals the code's models (new nullable columns, the recorded_at index): nothing to migrate.
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []
    # Old rows read back through the new model, the new columns empty; new rows use them.
    run = store.get_run("old-0")
    assert [b["throughput"] for b in run["batches"]] == [9.5, 10.5]
    assert run["num_skipped"] is None and run["batches"][0]["throughput_rounds"] is None
    store.record_run(
        {
            "run_key": "new-1",
            "config_key": "cfg",
            "model_name": "twins_svt_large",
            "weights": "w",
            "random_init": True,
            "backend": "onnxruntime",
            "status": "partial",
            "num_skipped": 2,
            "skipped_images": ["a.JPEG", "b.JPEG"],
            "failed_batch_sizes": {"8": "ToolError: boom"},
        },
        [
            {
                "batch_size": 1,
                "status": "ok",
                "throughput": 9.0,
                "throughput_rounds": [8.9, 9.0, 9.1],
                "perf_rounds": 3,
            },
            {"batch_size": 8, "status": "failed", "error": "ToolError: boom"},
        ],
    )
    new = store.get_run("new-1")
    assert new["skipped_images"] == ["a.JPEG", "b.JPEG"] and new["batches"][0]["throughput_rounds"] == [8.9, 9.0, 9.1]
    assert store.count_rows() == (4, 7)
    # Opening it again changes nothing.
    assert ResultsStore(url).schema_change is None


def test_sqlite_database_of_the_first_release_is_upgraded_keeping_every_row(tmp_path):
    _assert_upgraded_keeping_rows(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.postgres
def test_postgres_database_of_the_first_release_is_upgraded_keeping_every_row(fresh_postgres_url):
    _assert_upgraded_keeping_rows(fresh_postgres_url)


def test_new_database_is_created_at_head_and_base_revision_builds_the_first_release(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path / 'new.db'}")
    assert store.schema_change == (None, head_revision()) and store.schema_revision() == head_revision()
    # Upgrading an empty database revision by revision gives the same schema as creating it at head.
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from twins_tasks.store import _alembic_config

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'stepwise.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_upgrade_command(tmp_path, capsys):
    from twins_tasks.cli import main

    url = f"sqlite:///{tmp_path / 'old.db'}"
    _fill_first_release(url)
    assert main(["results", "--url", url, "--upgrade"]) == 0
    assert f"upgraded from revision {BASE_REVISION} (pre-Alembic) to {head_revision()}" in capsys.readouterr().out
    assert main(["results", "--url", url, "--upgrade"]) == 0
    assert "already at revision" in capsys.readouterr().out
    assert main(["results", "--url", url]) == 0
    assert "old-2" in capsys.readouterr().out


def test_database_from_a_newer_version_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    ResultsStore(url).engine.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(InputError, match="schema revision '9999', which this twins_tasks does not know"):
        ResultsStore(url)


# --------------------------------------------------------------------------------------- writability


def _read_only_mount(path: Path) -> bool:
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def test_read_only_database_fails_check_writable_naming_the_url(tmp_path):
    mount = tmp_path / "ro"
    if not _read_only_mount(mount):
        pytest.skip("cannot mount a tmpfs here (needs root): the read-only file case is not exercised")
    try:
        url = f"sqlite:///{mount / 'results.db'}"
        ResultsStore(url).engine.dispose()  # created at head while writable
        # Root ignores file modes: a read-only mount is what makes the file read-only even for root.
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        store = ResultsStore(url)  # reading works...
        with pytest.raises(InputError) as info:
            store.check_writable()  # ...writing does not, and says so before any compute
        message = str(info.value)
        assert f"results database sqlite:///{mount}/results.db cannot be written" in message
        assert "readonly database" in message and "Nothing was computed yet" in message
        store.engine.dispose()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: never leave a mount behind


def test_read_only_database_that_needs_an_upgrade_is_a_clear_error(tmp_path):
    mount = tmp_path / "ro"
    if not _read_only_mount(mount):
        pytest.skip("cannot mount a tmpfs here (needs root): the read-only file case is not exercised")
    try:
        url = f"sqlite:///{mount / 'old.db'}"
        _fill_first_release(url)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(InputError, match=rf"cannot open the results database sqlite:///{mount}/old.db: .*readonly"):
            ResultsStore(url)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: never leave a mount behind


def test_read_only_sqlite_uri_fails_check_writable(tmp_path):
    # Same check without mounting: SQLite's own read-only open mode.
    path = tmp_path / "results.db"
    ResultsStore(f"sqlite:///{path}").engine.dispose()
    store = ResultsStore(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(InputError, match="cannot be written: attempt to write a readonly database"):
        store.check_writable()
    ResultsStore(f"sqlite:///{path}").check_writable()  # the writable file passes and keeps no probe row
    assert ResultsStore(f"sqlite:///{path}").schema_revision() == head_revision()


def test_unreachable_server_is_an_input_error_at_open():
    with pytest.raises(
        InputError, match=r"cannot open the results database postgresql\+psycopg2?://u@127\.0\.0\.1:1/db"
    ):
        ResultsStore("postgresql://u@127.0.0.1:1/db")


def _version_rows(store: ResultsStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.scalars(sa.text("SELECT version_num FROM alembic_version")))


@pytest.mark.postgres
def test_postgres_check_writable(fresh_postgres_url):
    store = ResultsStore(fresh_postgres_url)
    rows = store.count_rows()
    store.check_writable()  # a writable server passes: no InputError...
    # ...and its probe insert was rolled back: nothing is left behind.
    assert _version_rows(store) == [head_revision()] and store.count_rows() == rows
    store.engine.dispose()


@pytest.mark.postgres
def test_postgres_role_without_usage_on_the_id_sequences_fails_check_writable(fresh_postgres_url):
    # Issue 17 item 3: such a role passed the check (it only probed alembic_version) and `record` then failed
    # after all the compute. The check now inserts what `record` will insert, and rolls it back.
    import uuid

    from sqlalchemy.exc import DBAPIError

    owner = ResultsStore(fresh_postgres_url)  # the schema, made by the database's owner
    role = f"twins_noseq_{uuid.uuid4().hex[:8]}"
    database = fresh_postgres_url.rsplit("/", 1)[1]
    with owner.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
        conn.exec_driver_sql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
    url = fresh_postgres_url.replace("postgres@", f"{role}@", 1)
    store = ResultsStore(url)
    try:
        with pytest.raises(InputError) as info:
            store.check_writable()
        message = str(info.value)
        assert "the results database postgresql+psycopg" in message and f"{role}@127.0.0.1:5432/{database}" in message
        assert "cannot be written: permission denied for sequence" in message and "Nothing was computed yet" in message
        assert "USAGE on their id sequences" in message
        with pytest.raises(DBAPIError, match="permission denied for sequence"):  # what `record` would have met
            store.record_run({"run_key": "r", "config_key": "c", "model_name": "m", "weights": "w",
                              "random_init": True, "backend": "onnxruntime"}, [])  # fmt: skip
        with owner.engine.begin() as conn:
            conn.exec_driver_sql(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
        store.check_writable()  # with the rights `record` needs it passes, and leaves no row behind
        assert store.count_rows() == (0, 0)
    finally:
        store.engine.dispose()
        with owner.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        owner.engine.dispose()


def _damage_pages(path: Path, names: tuple[str, ...]) -> None:
    """Overwrite every page of these tables or indexes with garbage (never the header, never the schema page)."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        marks = ", ".join("?" * len(names))
        pages = [n for (n,) in conn.execute(f"SELECT pageno FROM dbstat WHERE name IN ({marks})", names)]
    assert pages and 1 not in pages
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(bytes(range(256)) * (page_size // 256))


@pytest.mark.parametrize("damaged", ["tables", "indexes"])
def test_sqlite_file_with_damaged_pages_is_named_before_any_compute(tmp_path, capsys, damaged):
    # Issue 17 item 4: the header (and the schema) intact, pages damaged: the start check passed, and `twins
    # results` and `twins run` (after all the compute) died with DatabaseError tracebacks.
    from twins_tasks.cli import main

    path = tmp_path / "results.db"
    url = f"sqlite:///{path}"
    _fill_first_release(url)
    ResultsStore(url).engine.dispose()  # upgraded to head: what a nightly opens
    if damaged == "tables":  # reading a run fails: the check meets the damage itself
        _damage_pages(path, ("validation_run", "batch_result"))
    else:  # reads work, and `record` would fail: quick_check reports the damage
        _damage_pages(path, ("ix_validation_run_config_key", "ix_validation_run_recorded_at"))
    store = ResultsStore(url)  # the open reads only the schema and its stamp: fast, and it still works
    with pytest.raises(InputError) as info:
        store.check_writable()  # at plan / the start of `twins run`
    message = str(info.value)
    assert f"the results database file {path} is damaged or not a SQLite database (" in message
    assert "restore it from a backup" in message and f"`sqlite3 {path} .recover | sqlite3 {path}.recovered`" in message
    assert message.endswith("Nothing was computed yet") and "\n" not in message
    # Whatever meets the damage later (a record after the compute, `twins results`) says the same, no traceback.
    with pytest.raises(InputError, match="is damaged or not a SQLite database"):
        store.record_run({"run_key": "r", "config_key": "cfg", "model_name": "m", "weights": "w",
                          "random_init": True, "backend": "onnxruntime"}, [])  # fmt: skip
    store.engine.dispose()
    if damaged == "tables":
        for extra in ([], ["--run", "old-1"]):
            assert main(["results", "--url", url, *extra]) == 2
            err = capsys.readouterr().err
            assert f"twins results: error: the results database file {path} is damaged" in err and ".recover" in err


# --------------------------------------------------------------------------------------- run ids


def test_new_run_id_is_unique_in_one_second():
    when = dt.datetime(2026, 11, 26, 3, 0, 0, tzinfo=dt.UTC)
    ids = {new_run_id(now=when) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("cli__20261126T030000_") for i in ids)


def test_two_processes_started_together_get_their_own_run_folders(tmp_path):
    """Two `twins run`-like processes in the same second: different ids, and each creates its folder exclusively."""
    code = (
        "import sys; from twins_tasks.store import new_run_id; from twins_tasks.files import create_run_dir; "
        "print(create_run_dir(sys.argv[1], new_run_id()))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "runs")], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    folders = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert folders[0] != folders[1] and all(Path(f).is_dir() for f in folders)


def test_run_folder_is_created_exclusively(tmp_path):
    from twins_tasks.files import create_run_dir

    first = create_run_dir(tmp_path / "runs", "cli__x")
    assert first.is_dir()
    with pytest.raises(InputError, match=r"run folder .*cli__x already exists"):
        create_run_dir(tmp_path / "runs", "cli__x")


# --------------------------------------------------------------------------------------- concurrent opens


def _open_concurrently(url: str, n: int = 4) -> list[str]:
    """``n`` processes open (create or upgrade) the same database at once; return what each printed."""
    code = (
        "import sys; from twins_tasks.store import ResultsStore; s = ResultsStore(sys.argv[1]); "
        "s.check_writable(); print(s.schema_revision())"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(n)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(out.strip())
    return results


@pytest.mark.parametrize("start", ["new", "first release"])
def test_processes_opening_one_sqlite_database_at_once_all_succeed(tmp_path, start):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    if start == "first release":
        _fill_first_release(url)
    assert _open_concurrently(url) == [head_revision()] * 4
    if start == "first release":
        assert ResultsStore(url).count_rows() == (3, 5)


@pytest.mark.postgres
def test_processes_opening_one_postgres_database_at_once_all_succeed(fresh_postgres_url):
    _fill_first_release(fresh_postgres_url)
    assert _open_concurrently(fresh_postgres_url) == [head_revision()] * 4
    assert ResultsStore(fresh_postgres_url).count_rows() == (3, 5)


@pytest.mark.parametrize("extra", [[], ["--upgrade"], ["--run", "r1"]])
def test_results_command_refuses_a_missing_sqlite_file(tmp_path, capsys, extra):
    # Issue 17 item 16: a typo in --url used to create (and list) an empty database.
    from twins_tasks.cli import main

    path = tmp_path / "typo.db"
    assert main(["results", "--url", f"sqlite:///{path}", *extra]) == 2
    assert f"no results database at {path}; check --url, or run `twins run` first" in capsys.readouterr().err
    assert not path.exists()
    # `twins run` and the DAG open the store directly: a new database is still created there.
    ResultsStore(f"sqlite:///{path}").engine.dispose()
    assert main(["results", "--url", f"sqlite:///{path}"]) == 0


# --------------------------------------------------------------------------------------- killed upgrades


# Run in a fresh interpreter: forking pytest itself (which has threads: servers, log handlers) can leave the child
# deadlocked on a lock another thread held at the fork. This process has one thread, so its forks are safe.
_KILL_EACH_STATEMENT = """
import os, shutil, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
from twins_tasks.store import ResultsStore

pristine, folder = sys.argv[1], sys.argv[2]
for statements in range(1, 200):
    path = os.path.join(folder, f"killed-{statements}.db")
    if pristine:
        shutil.copyfile(pristine, path)
    pid = os.fork()
    if pid == 0:  # the child opens (creates or upgrades) the copy and SIGKILLs itself after that many statements
        count = 0

        def after(*_):
            global count
            count += 1
            if count == statements:
                os.kill(os.getpid(), signal.SIGKILL)

        event.listen(Engine, "after_cursor_execute", after)
        try:
            ResultsStore(f"sqlite:///{path}")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        os.remove(path)
        break  # the open finished: every statement of it has been a kill point
    print(path)
"""


def _killed_opens(pristine: Path | None, folder: Path) -> list[Path]:
    """Copies of ``pristine`` (or new files) whose open (create or upgrade) was SIGKILLed after its 1st, 2nd, …
    SQL statement, one per statement the open makes."""
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_EACH_STATEMENT, str(pristine or ""), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [Path(line) for line in proc.stdout.split()]


def _stamped(url: str, revision: str) -> None:
    """Stamp a first-release database at ``revision`` (as an older twins_tasks left it after its upgrade)."""
    from alembic import command

    from twins_tasks.store import _alembic_config

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.stamp(_alembic_config(conn), revision)
    engine.dispose()


@pytest.mark.parametrize("start", [f"revision {BASE_REVISION}", "first release", "new"])
def test_sqlite_schema_change_killed_at_any_statement_leaves_a_database_that_opens(tmp_path, start):
    # Issue 17 item 1: each ALTER TABLE committed alone while the revision stamp stayed old, so a kill mid-upgrade
    # left "duplicate column name: status" for every later open. Now the change and its stamp commit together.
    pristine = tmp_path / "pristine.db"
    before = _fill_first_release(f"sqlite:///{pristine}") if start != "new" else {}
    if start.startswith("revision"):
        _stamped(f"sqlite:///{pristine}", BASE_REVISION)
    killed = _killed_opens(pristine if before else None, tmp_path)
    for path in killed:
        store = ResultsStore(f"sqlite:///{path}")  # opens, and creates or upgrades from where the kill left it
        assert store.schema_revision() == head_revision(), path.name
        if before:
            old = sa.MetaData()
            first_release_tables(old)
            with store.engine.connect() as conn:
                for name, rows in before.items():
                    table = old.tables[name]
                    assert [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))] == rows
        store.engine.dispose()
    assert len(killed) >= 5  # the change took several statements, and each was a kill point
