# The tenantctl worker (and CLI) image. The same image can run the host API emulator for a
# self-contained docker compose stack.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models models
COPY config config
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY starter starter
COPY devstack devstack
# /state: a fresh named volume (docker-compose.yml) takes the owner of the image's directory, so the
# emulator running as tenantctl can write its kubeconfig and state file there.
RUN pip install ".[devstack]" && groupadd --gid 10001 tenantctl \
    && useradd --uid 10001 --gid 10001 --no-create-home tenantctl && install -d -o 10001 -g 10001 /state
USER tenantctl
CMD ["python", "-m", "worker"]
