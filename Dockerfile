# One image for every shopmesh process: `docker run shopmesh <inventory|order|notification|gateway>`.
# The base images are build arguments so a machine without Docker Hub can stand in its own
# (scripts/build-image.sh --debian-bases); the defaults are the official images.
ARG GO_IMAGE=golang:1.24-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${GO_IMAGE} AS tools
# Same pinned probe as scripts/install-tools.sh, for compose health checks.
RUN CGO_ENABLED=0 GOBIN=/out go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62

FROM ${PYTHON_IMAGE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY generated generated
COPY mesh mesh
COPY inventory inventory
COPY order order
COPY notification notification
COPY gateway gateway
RUN pip install --no-cache-dir ".[postgres]" \
    && useradd --system --uid 10001 shop \
    && mkdir /data && chown shop /data
COPY --from=tools /out/grpc-health-probe /usr/local/bin/grpc-health-probe
ENV SHOPMESH_HOST=0.0.0.0 \
    SHOPMESH_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
USER shop
VOLUME /data
ENTRYPOINT ["python", "-m"]
CMD ["gateway"]
