"""docker-compose.yaml cannot run here (no Docker engine): check its topology statically."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def _env(service):
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_services_follow_the_official_layout(compose):
    assert set(compose["services"]) == {
        "postgres",
        "results-db",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-worker-npu",
        "airflow-triggerer",
        "airflow-init",
    }
    commands = {name: s.get("command") for name, s in compose["services"].items()}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-worker"] == "celery worker"
    assert compose["services"]["airflow-apiserver"]["ports"] == ["8080:8080"]
    health = compose["services"]["airflow-apiserver"]["healthcheck"]["test"]
    assert "http://localhost:8080/api/v2/monitor/health" in health


def test_common_environment(compose):
    for name, service in compose["services"].items():
        if not name.startswith("airflow-"):
            continue
        env = _env(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        for secret in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
            assert env[secret].startswith("${"), f"{name}: {secret} must come from .env, not the file"
        # Results go to their own server, through the twins_results Connection, never Airflow's DB.
        results = env["AIRFLOW_CONN_TWINS_RESULTS"]
        assert results.startswith("postgresql://") and "@results-db:" in results
        assert env["TWINS_NPU_QUEUE"] == "ascend" and env["TWINS_NPU_POOL"] == "ascend_npu"
        assert "twins-work:/opt/airflow/twins" in service["volumes"], f"{name} must share the work folder"


def test_npu_worker_has_devices_driver_and_queue(compose):
    npu = compose["services"]["airflow-worker-npu"]
    command = npu["command"].split()
    assert command[:2] == ["celery", "worker"]
    assert command[command.index("--queues") + 1] == "ascend"
    assert npu["build"]["target"] == "npu"
    devices = npu["devices"]
    assert {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= set(devices)
    assert any(d.startswith("/dev/davinci") and d[len("/dev/davinci") :].isdigit() for d in devices)
    mounts = {v.split(":")[0]: v for v in npu["volumes"]}
    for host_path in ("/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi"):
        assert host_path in mounts and mounts[host_path].endswith(":ro"), host_path
    assert _env(npu)["TWINS_CANN_ENV"] == "/usr/local/Ascend/ascend-toolkit/set_env.sh"
    # The default worker must not take NPU work.
    assert "--queues" not in compose["services"]["airflow-worker"]["command"]


def test_init_migrates_and_creates_the_pool_the_dag_uses(compose):
    script = "\n".join(compose["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in script
    assert 'airflow pools set ascend_npu "${TWINS_NPU_CHIPS:-1}"' in script
    assert 'airflow pools set ascend_compile "${TWINS_COMPILE_SLOTS:-2}"' in script
    dag_source = (ROOT / "dags" / "twins_svt_l_validation.py").read_text()
    assert 'os.environ.get("TWINS_NPU_POOL", "ascend_npu")' in dag_source
    assert 'os.environ.get("TWINS_NPU_QUEUE", "ascend")' in dag_source
    assert 'os.environ.get("TWINS_COMPILE_POOL", "ascend_compile")' in dag_source


def test_npu_workers_share_host_leases_and_more_hosts_join_the_ascend_queue(compose):
    npu = compose["services"]["airflow-worker-npu"]
    # Chip leases are flock()s in a host folder: bound into every NPU worker container of the host.
    lease_dir = _env(npu)["TWINS_LEASE_DIR"]
    assert f"{lease_dir}:{lease_dir}" in npu["volumes"]

    class ComposeLoader(yaml.SafeLoader):  # Compose's `!reset` tag drops a key inherited from the main file
        pass

    ComposeLoader.add_constructor("!reset", lambda loader, node: None)
    extra = yaml.load((ROOT / "docker-compose.npu-host.yaml").read_text(), Loader=ComposeLoader)
    assert set(extra["services"]) == {"airflow-worker-npu"}  # the other host runs only an NPU worker
    env = extra["services"]["airflow-worker-npu"]["environment"]
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW_CONN_TWINS_RESULTS"):  # fmt: skip
        assert "${TWINS_MAIN_HOST" in env[key], key
    # The shared work folder (artifacts and outputs) replaces the main host's local volume.
    assert any(v.endswith(":/opt/airflow/twins") and "TWINS_SHARED_WORK_DIR" in v
               for v in extra["services"]["airflow-worker-npu"]["volumes"])  # fmt: skip


def test_dependencies_and_dockerfile(compose):
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker", "airflow-worker-npu"):
        deps = compose["services"][name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2" in dockerfile
    assert "AS npu" in dockerfile and "ascend-wheels" in dockerfile
    assert set(compose["volumes"]) >= {"postgres-db-volume", "results-db-volume", "twins-work"}


def test_every_database_url_works_with_the_installed_drivers(compose):
    # Each URL of the file resolves to a SQLAlchemy dialect whose driver the project installs (the `airflow` extra):
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, and `db+` is Celery's prefix for a SQLAlchemy URL.
    from sqlalchemy.engine import make_url

    from twins_tasks.store import _with_driver

    env = _env(compose["services"]["airflow-scheduler"])
    urls = {
        "metadata": env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        "celery results": env["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+"),
        "results (twins_results)": _with_driver(env["AIRFLOW_CONN_TWINS_RESULTS"]),
    }
    for what, url in urls.items():
        dialect = make_url(url).get_dialect()
        assert dialect.import_dbapi() is not None, f"{what}: {url} has no driver installed"
    # The async engine `airflow db migrate` opens on PostgreSQL.
    import asyncpg  # noqa: F401
    import redis  # noqa: F401  (the broker's client)
