# pkv's container image: a release build in a Rust image, then the binary alone (with CA
# certificates for rediss:// upstreams) on a slim Debian, run as a user without privileges.
#
#   docker build -t pkv .
#   docker run -p 6380:6380 -e PKV_UPSTREAM_URL=redis://redis-host:6379 pkv
#
# The base images are arguments so that a machine without access to a registry can build
# from images it made itself (scripts/compose-test.sh does); the defaults are the usual
# public ones.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The release profile keeps line tables for local profiling; the image does not need them.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
# Dependencies first, against placeholder sources, so that a change to pkv's own code
# rebuilds only pkv: this layer is reused while Cargo.toml and Cargo.lock stay the same.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/hot_path.rs \
 && cargo build --release --locked \
 && rm -rf src benches
COPY src src
COPY benches benches
# COPY keeps the files' times, which may be older than the placeholder build: touch them
# so that cargo rebuilds pkv from the real sources.
RUN touch src/lib.rs src/main.rs \
 && cargo build --release --locked \
 && cp target/release/pkv /usr/local/bin/pkv

FROM ${RUNTIME_IMAGE}
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /usr/local/bin/pkv /usr/local/bin/pkv
# A fixed uid, so an orchestrator can require a non-root user (runAsNonRoot) and a
# mounted volume can be given to it. /data is where PKV_DATA_FILE may point.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin pkv \
 && mkdir /data \
 && chown pkv:pkv /data
USER 10001:10001
WORKDIR /data
# The default 127.0.0.1 could not be reached from outside the container.
ENV PKV_LISTEN=0.0.0.0:6380
EXPOSE 6380
# A PING costs pkv next to nothing, so it is asked often.
HEALTHCHECK --interval=5s --timeout=5s --start-period=5s --retries=3 \
  CMD ["pkv", "healthcheck", "--timeout", "4"]
ENTRYPOINT ["pkv"]
CMD ["serve"]
