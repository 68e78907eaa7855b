"""The records steps hand each other (XComs in the DAG, plain values in ``twins run``): JSON-able, typed."""

from __future__ import annotations

from typing import Any, TypedDict


class PlanRecord(TypedDict):
    """What the plan step resolved on the host that does the work."""

    backend: str  # resolved: "ascend" or "onnxruntime", never "auto"
    backend_options: dict[str, Any]  # the backend's constructor arguments
    backend_description: dict[str, Any]  # describe_backend(): device, SoC, versions
    batch_sizes: list[int]
    cache_dir: str
    run_dir: str
    result_dir: str
    failure_dir: str  # bs<N>_<step>.json: why a batch size's chain step failed
    device_ids: list[int]  # the chips the batch sizes lease from ([] for a backend without chips)


class RecordedRun(TypedDict):
    """What the record step wrote: the run's key, its configuration's key and the database (no password)."""

    run_key: str
    config_key: str
    results_db: str
