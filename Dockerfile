# The project's Airflow image: Airflow 3.3.2 + twins_tasks + the DAG and plugins (mounted in compose).
FROM apache/airflow:3.3.2-python3.11 AS base

USER root
# libgl/libglib are not needed: Pillow and ONNX Runtime wheels are self-contained. bash is already there.
USER airflow

COPY --chown=airflow:root pyproject.toml README.md /opt/twins/
COPY --chown=airflow:root twins_tasks /opt/twins/twins_tasks
# CPU builds of torch/torchvision keep the image small (PyPI's default torch is a multi-GB CUDA build);
# "2.14.1+cpu" satisfies the project's "torch==2.14.1" pin.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        "torch==2.14.1+cpu" "torchvision==0.29.1+cpu" \
    && pip install --no-cache-dir "/opt/twins[airflow]"

# The NPU worker: the same image plus Ascend's aclruntime/ais_bench wheels (see ascend-wheels/README.md).
# The CANN toolkit and driver stay on the host and are mounted read-only by docker-compose.yaml.
FROM base AS npu
COPY --chown=airflow:root ascend-wheels/ /tmp/ascend-wheels/
RUN if ls /tmp/ascend-wheels/*.whl >/dev/null 2>&1; then \
        pip install --no-cache-dir /tmp/ascend-wheels/*.whl; \
    else \
        echo "WARNING: no wheels in ascend-wheels/: ais_bench must come from the mounted host environment"; \
    fi
