# syntax=docker/dockerfile:1
# One image for the three gpupack processes: `gpupack serve` (extender), `gpupack webhook` and
# `gpupack agent` (node agent; pynvml finds libnvidia-ml.so, which the NVIDIA runtime mounts).
# Build: docker build -t <registry>/gpupack:0.1.0 .

# --- build: install gpupack and its runtime dependencies into a virtual environment.
# Every dependency ships manylinux wheels, so no compiler is needed even here.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/gpupack
WORKDIR /src
# Dependencies first, exactly as locked (versions and hashes; tests/test_lockfile.py keeps the lock
# in step with pyproject.toml), then gpupack itself without resolving anything again.
COPY requirements.lock ./
RUN /opt/gpupack/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY binpack ./binpack
COPY scheduler ./scheduler
COPY webhook ./webhook
COPY benchmarks ./benchmarks
# A non-editable install (no [test] extra, no dependency resolution), so /src is not needed later.
RUN /opt/gpupack/bin/pip install --no-cache-dir --no-deps . \
 && /opt/gpupack/bin/python -m compileall -q /opt/gpupack/lib

# --- runtime: the slim interpreter, the virtual environment, an unprivileged user. Nothing else.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 65532 gpupack \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gpupack
COPY --from=build /opt/gpupack /opt/gpupack
ENV PATH=/opt/gpupack/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["gpupack"]
CMD ["--help"]
