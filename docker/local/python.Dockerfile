# A Python image for scripts/compose-test.sh, standing in for the public `python` image:
# Debian's python3 with a virtual environment first on PATH (so `pip install` works as in
# the public image), and the host's CA bundle for pip where a proxy re-signs TLS.
ARG BASE_IMAGE=pkv-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/python
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/opt/python/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
