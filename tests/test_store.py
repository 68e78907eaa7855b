"""The results database: schema on first use, idempotent upserts, queries; SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from twins_tasks.store import ResultsStore, default_url


def _run(run_key: str, config_key: str = "cfg", **extra):
    return {
        "run_key": run_key,
        "config_key": config_key,
        "model_name": "twins_svt_large",
        "weights": "random-init seed=0",
        "random_init": True,
        "backend": "onnxruntime",
        "device": "CPU",
        "started_at": dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC),
        **extra,
    }


def _batches(*pairs):
    return [
        {"batch_size": bs, "throughput": tp, "top1": 0.1, "top5": 0.5, "latency_mean_ms": 1000 * bs / tp}
        for bs, tp in pairs
    ]


def _exercise(store: ResultsStore) -> None:
    store.record_run(_run("r1"), _batches((1, 9.5), (4, 10.5)))
    first = store.get_run("r1")
    # Recording the same run again (a retried task) updates in place: one run, one row per batch size.
    store.record_run(_run("r1"), _batches((1, 9.7), (4, 10.1)))
    assert store.count_rows() == (1, 2)
    again = store.get_run("r1")
    assert again["id"] == first["id"]
    assert [b["throughput"] for b in again["batches"]] == [9.7, 10.1]
    # A re-run with fewer batch sizes leaves exactly its own set.
    store.record_run(_run("r1"), _batches((4, 10.0)))
    assert store.count_rows() == (1, 1)
    assert [b["batch_size"] for b in store.get_run("r1")["batches"]] == [4]

    store.record_run(_run("r2"), _batches((4, 11.0)))
    store.record_run(_run("r3", config_key="other"), _batches((4, 1.0)))
    store.update_run("r2", regression_status="failed")
    assert store.get_run("r2")["regression_status"] == "failed"
    assert [r["run_key"] for r in store.list_runs()] == ["r3", "r2", "r1"]
    with pytest.raises(LookupError, match="nope"):
        store.update_run("nope", regression_status="passed")
    with pytest.raises(ValueError, match="unknown run fields"):
        store.record_run({**_run("r4"), "colour": "red"}, [])


def test_sqlite_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    _exercise(ResultsStore(url))
    # The schema persists: a new store on the same file sees the rows.
    assert ResultsStore(url).count_rows() == (3, 3)


def test_default_url(monkeypatch, tmp_path):
    monkeypatch.delenv("TWINS_RESULTS_URL", raising=False)
    assert default_url(tmp_path) == f"sqlite:///{tmp_path / 'twins_results.db'}"
    monkeypatch.setenv("TWINS_RESULTS_URL", "postgresql://u@h/db")
    assert default_url(tmp_path) == "postgresql://u@h/db"


@pytest.mark.postgres
def test_postgres_store(fresh_postgres_url):
    # A database of its own: _exercise counts rows from an empty database, whatever other tests recorded.
    store = ResultsStore(fresh_postgres_url)
    assert store.engine.dialect.name == "postgresql"
    _exercise(store)


@pytest.mark.postgres
def test_postgres_airflow_style_uri(postgres_url):
    # Airflow Connections render PostgreSQL as postgres://; the store accepts it.
    store = ResultsStore(postgres_url.replace("postgresql://", "postgres://", 1))
    store.record_run(_run(f"r-{uuid.uuid4().hex[:6]}"), _batches((1, 1.0)))
    assert store.count_rows()[0] >= 1


@pytest.mark.parametrize(
    "url, says",
    [
        ("bogus://x", "results database URL bogus://x is not usable"),
        ("not a url", "results database URL (not a URL) is not usable"),
        # psycopg 3 when installed, else psycopg2 (see _with_driver)
        ("postgresql://user:s3cret@127.0.0.1:1/db", "cannot open the results database postgresql+psycopg"),
    ],
)
def test_unusable_url_is_a_clear_error_without_the_password(url, says):
    from twins_tasks.errors import InputError

    with pytest.raises(InputError) as info:
        ResultsStore(url)
    assert says in str(info.value) and "s3cret" not in str(info.value)
    assert "TWINS_RESULTS_URL" in str(info.value)


def test_sqlite_file_in_a_missing_folder_is_a_clear_error(tmp_path):
    from twins_tasks.errors import InputError

    with pytest.raises(InputError, match=r"cannot open the results database .*missing/r\.db: unable to open"):
        ResultsStore(f"sqlite:///{tmp_path}/missing/r.db")


def test_password_with_an_at_sign_never_appears():
    # Issue 17 item 6: an unencoded "@" in the password used to split it ("u:***@PW9@host", and the driver's
    # "failed to resolve host 'PW9@…'"). The host cannot hold an "@", so the last one ends the password.
    from twins_tasks.errors import InputError

    with pytest.raises(InputError) as info:
        ResultsStore("postgresql://u:s3cr@tPW9@127.0.0.1:1/db")
    message = str(info.value)
    assert "s3cr" not in message and "tPW9" not in message
    assert "postgresql+psycopg" in message and "://u:***@127.0.0.1:1/db" in message


def test_driver_error_text_never_carries_the_password():
    from sqlalchemy.exc import DBAPIError

    from twins_tasks.store import _reason

    url = "postgresql://u:s3cr@tPW9@h/db"
    exc = DBAPIError("SELECT 1", {}, Exception("could not connect: bad dsn 'password=s3cr@tPW9 host=h'"))
    reason = _reason(exc, url)
    assert "s3cr" not in reason and "tPW9" not in reason and "could not connect" in reason
    # Percent-encoded in the URL, the driver may still quote it decoded (or as written): both are hidden.
    exc = DBAPIError("SELECT 1", {}, Exception("x s3cr%40t%2FPW9 y s3cr@t/PW9"))
    reason = _reason(exc, "postgresql://u:s3cr%40t%2FPW9@h/db")
    assert "s3cr" not in reason and "PW9" not in reason


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://u:s3cret@db.example:notaport/db", "://u:***@db.example:notaport/db"),
        ("postgresql://u:s3cret@[::1/db", "://u:***@[::1/db"),
    ],
)
def test_url_with_a_bad_port_or_unclosed_ipv6_bracket_is_an_input_error(url, shown):
    # Issue 17 item 8: was a ValueError traceback (and retries in the DAG, a 500 in the UI).
    from twins_tasks.errors import InputError

    with pytest.raises(InputError) as info:
        ResultsStore(url)
    message = str(info.value)
    assert "results database URL postgresql+psycopg" in message and shown in message
    assert "s3cret" not in message
    assert "port must be a number" in message and "[::1]" in message and "TWINS_RESULTS_URL" in message


# --------------------------------------------------------------------------------------- run identity (issue 17 item 2)

A, B = "a" * 32, "b" * 32  # two runs' identities (run_uid)


def test_a_run_name_another_run_recorded_is_refused_and_a_retry_of_the_same_run_upserts(tmp_path):
    from twins_tasks.errors import InputError

    store = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")
    store.record_run(_run("scheduled__2026-12-01", run_uid=A, source="airflow:dag"), _batches((1, 9.5)))
    # The same run again (Airflow retrying `record`, or a cleared `record`): upserted as before.
    store.check_run_key("scheduled__2026-12-01", A)
    store.record_run(_run("scheduled__2026-12-01", run_uid=A, source="airflow:dag"), _batches((1, 9.7)))
    assert store.count_rows() == (1, 1) and store.get_run("scheduled__2026-12-01")["batches"][0]["throughput"] == 9.7
    store.check_run_key("scheduled__2026-12-02", B)  # a free name passes
    # Another run (another deployment's scheduled run, a second `twins run --run-name`): refused up front...
    with pytest.raises(InputError) as info:
        store.check_run_key("scheduled__2026-12-01", B)
    message = str(info.value)
    assert (
        f"run name 'scheduled__2026-12-01' is already recorded in the results database sqlite:///{tmp_path}" in message
    )
    assert "by another run: source airflow:dag, on 20" in message and " UTC; it is kept as it is" in message
    assert "Nothing was computed yet" in message and "Choose another run name (twins run --run-name" in message
    assert "each Airflow deployment its own Connection twins_results" in message
    # ...and at record, should it have taken the name while this one computed: nothing of the first is replaced.
    with pytest.raises(InputError, match="This run's results were not recorded"):
        store.record_run(_run("scheduled__2026-12-01", run_uid=B, source="cli"), _batches((4, 1.0)))
    kept = store.get_run("scheduled__2026-12-01")
    assert (
        kept["run_uid"] == A and kept["source"] == "airflow:dag" and [b["batch_size"] for b in kept["batches"]] == [1]
    )


def test_rows_recorded_before_run_identities_are_not_replaced_by_a_new_run(tmp_path):
    from twins_tasks.errors import InputError

    store = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")
    store.record_run(_run("old"), _batches((1, 9.5)))  # no run_uid, as every row recorded before revision 0003
    for refuse in (lambda: store.check_run_key("old", A), lambda: store.record_run(_run("old", run_uid=A), [])):
        with pytest.raises(InputError, match=r"by another run \(before runs carried an identity\): source cli"):
            refuse()
    # A record without an identity (a retry of a run planned before the upgrade) still upserts its own row.
    store.record_run(_run("old"), _batches((1, 9.6)))
    assert store.count_rows() == (1, 1) and store.get_run("old")["batches"][0]["throughput"] == 9.6


def _dataset(tmp_path):
    val = tmp_path / "val"
    (val / "n01440764").mkdir(parents=True)
    return val


def test_dag_plan_keeps_the_runs_identity_in_its_run_folder(tmp_path):
    # A retried or cleared plan of the same DAG run reads back its identity; another deployment (its own work
    # folder) planning the same run id against the same results database is refused before any compute.
    from twins_tasks.errors import InputError
    from twins_tasks.recipe import BackendSettings, RecipeConfig
    from twins_tasks.steps import plan_run

    store = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")
    config = RecipeConfig(
        dataset_path=str(_dataset(tmp_path)), random_init=True, backend=BackendSettings("onnxruntime")
    )
    key = "scheduled__2026-12-01T02:00:00+00:00"
    first = plan_run(config, work_dir=tmp_path / "deployment-a", run_key=key, store=store)
    store.record_run(_run(key, run_uid=first["run_uid"], source="airflow:dag"), _batches((1, 9.5)))
    again = plan_run(config, work_dir=tmp_path / "deployment-a", run_key=key, store=store)
    assert again["run_uid"] == first["run_uid"] and len(first["run_uid"]) == 32
    with pytest.raises(InputError, match="run name 'scheduled__2026-12-01T02:00:00.00:00' is already recorded"):
        plan_run(config, work_dir=tmp_path / "deployment-b", run_key=key, store=store)


def test_twins_run_refuses_a_run_name_another_run_recorded_before_any_compute(tmp_path, capsys):
    from twins_tasks.cli import main
    from twins_tasks.store import new_run_uid

    url = f"sqlite:///{tmp_path / 'results.db'}"
    ResultsStore(url).record_run(_run("by-hand", run_uid=new_run_uid()), _batches((1, 9.5)))
    work = tmp_path / "other-work"
    argv = ["run", "--root_path", str(_dataset(tmp_path)), "--random-init", "--backend", "onnxruntime",
            "--work-dir", str(work), "--run-name", "by-hand", "--results-url", url]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "twins run: error: run name 'by-hand' is already recorded" in err and "Nothing was computed yet" in err
    assert not work.exists()  # no inputs prepared, no model exported, no run folder
    assert ResultsStore(url).get_run("by-hand")["batches"][0]["throughput"] == 9.5


def test_a_batch_records_the_chips_its_inference_was_split_over_beside_perfs_one_chip(tmp_path):
    from twins_tasks.results import batch_row

    # Revision 0005: perf's number is one chip's (device); the inference may have run on several (infer_device).
    inferred = {"device": "npu-host:npu0,npu1,npu3", "seconds": 2.0, "throughput": 25.0}
    row = batch_row(4, {"artifact": "m_bs4.om"}, inferred, {"device": "npu-host:npu1", "throughput": 9.0}, {})
    store = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")
    store.record_run(_run("r1"), [row])
    (batch,) = store.get_run("r1")["batches"]
    assert (batch["device"], batch["infer_device"]) == ("npu-host:npu1", "npu-host:npu0,npu1,npu3")
