# syntax=docker/dockerfile:1
# dnsd: a DNS server for Kubernetes clusters.
#
#   docker build -t dnsd .
#   docker run --rm -p 1053:53/udp -p 1053:53/tcp -v "$PWD/config/cluster:/etc/dnsd/cluster:ro" dnsd
#   dig @127.0.0.1 -p 1053 web.default.svc.cluster.local
#
# The image's default config (deploy/dnsd.yaml) listens on 0.0.0.0:53 and serves the manifests mounted at
# /etc/dnsd/cluster. It runs as uid/gid 65532 (numeric, so Kubernetes can check runAsNonRoot). Binding
# port 53 as non-root works under Docker (it sets net.ipv4.ip_unprivileged_port_start=0 in containers);
# in Kubernetes set that sysctl in the Pod's securityContext (deploy/deployment.yaml does) or listen
# on a high port.
#
# HTTP on 8080: /health (the HEALTHCHECK below), /ready, /metrics and the status page at /.

# ---- build: a virtualenv with dnsd, its dependencies and uvloop (the "fast" extra); all ship as wheels
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dnsd ./dnsd
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ".[fast]" \
 && /opt/venv/bin/dnsd --version

# ---- runtime: the virtualenv on a clean slim base, non-root
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="dnsd" \
      org.opencontainers.image.description="DNS server for Kubernetes clusters, answering like CoreDNS's kubernetes plugin"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 65532 dnsd \
 && useradd --system --uid 65532 --gid dnsd --no-create-home --shell /usr/sbin/nologin dnsd \
 && mkdir -p /etc/dnsd/cluster
COPY deploy/dnsd.yaml /etc/dnsd/dnsd.yaml
USER 65532:65532
EXPOSE 53/udp 53/tcp 8080/tcp
# No curl in the slim image: the venv's Python asks /health.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["dnsd"]
CMD ["--config", "/etc/dnsd/dnsd.yaml"]
