# One image for every process of matching_pipeline on Kubernetes (see docs/deploy.md):
#   - the Dagster code server (default CMD; the Helm chart's user-code deployment runs it),
#   - the run workers (the K8sRunLauncher starts `dagster api execute_run ...` in a pod of this image),
#   - the jobs HTTP API (`matching-pipeline api --host 0.0.0.0 --port 8000`, deploy/k8s/api.yaml).
# There is deliberately no ENTRYPOINT: the chart and the run launcher set the container's args,
# which replace CMD but would be appended to an ENTRYPOINT.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    MATCHING_DATA_DIR=/opt/matching/data

# A fixed uid/gid so that pod securityContexts (runAsUser: 10001) match the image.
RUN groupadd --system --gid 10001 matching \
    && useradd --system --uid 10001 --gid matching --home-dir /opt/matching --shell /usr/sbin/nologin matching

WORKDIR /opt/matching/app
COPY pyproject.toml requirements.lock README.md ./
COPY matching_pipeline ./matching_pipeline
# Versions come from the lock file, as `make install` does; the `k8s` extra adds dagster-k8s, which
# Dagster's Helm deployment needs in user-code images (K8sRunLauncher, run monitoring); `s3` adds
# s3fs for an index and inbox in object storage (MATCHING_INDEX_URL, MATCHING_INBOX_URL).
RUN pip install -c requirements.lock ".[k8s,s3]" \
    && mkdir -p "$DAGSTER_HOME" "$MATCHING_DATA_DIR" \
    && chown -R matching:matching /opt/dagster "$MATCHING_DATA_DIR"

USER 10001:10001
EXPOSE 4000 8000

CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "matching_pipeline.definitions"]
