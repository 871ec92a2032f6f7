# A Rust build image for scripts/compose-test.sh, standing in for the public `rust` image on
# a machine that can reach no image registry: a Debian made by debootstrap, Debian's C
# toolchain (the linker), the host's Rust toolchain (copied into the build context as
# toolchain/), and the host's CA bundle, so that cargo can fetch crates where a proxy
# re-signs TLS.
ARG BASE_IMAGE=pkv-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY toolchain/ /usr/local/
ENV CARGO_HOME=/usr/local/cargo \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt
