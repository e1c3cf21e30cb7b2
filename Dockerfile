# Tasker server image. Same install steps as `make install` (minus the dev extra):
# a venv with sdk-python (generated stubs) and the server, copied into a slim runtime.

# ---------------------------------------------------------------- builder
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Only what the two Python distributions need (see .dockerignore).
COPY . .
RUN /opt/venv/bin/pip install ./sdk-python . \
 && /opt/venv/bin/tasker --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim
RUN groupadd --system tasker \
 && useradd --system --gid tasker --home-dir /var/lib/tasker --shell /usr/sbin/nologin tasker \
 && mkdir -p /var/lib/tasker \
 && chown tasker:tasker /var/lib/tasker
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TASKER_DATABASE_URL=sqlite+aiosqlite:////var/lib/tasker/tasker.db
USER tasker
WORKDIR /var/lib/tasker
VOLUME ["/var/lib/tasker"]
EXPOSE 50051
# grpc.health.v1 Check on the local port (grpcio-health-checking is a server dependency).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(), timeout=3); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]
CMD ["tasker", "serve", "--listen", "0.0.0.0:50051"]
