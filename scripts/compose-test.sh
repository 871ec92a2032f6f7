#!/usr/bin/env bash
# Runs docker-compose.yml for real: builds pkv's image from the Dockerfile, brings up Redis
# and pkv, runs the example application (examples/python) through pkv with a token, checks
# in Redis that its data landed under the account's prefix and nowhere else, and tears it
# all down (containers, networks, volumes).
#
# Made for a machine that reaches Debian's packages, crates.io and PyPI but no image
# registry: it installs docker.io, docker-compose and debootstrap when they are missing
# (as root), starts dockerd if none runs (and stops it at the end), and builds the base
# images itself: a minimal Debian (debootstrap, `docker import`), and from it a Rust image
# with this machine's toolchain, a Python image and a Redis image. They are passed to the
# real Dockerfile and compose file as the build arguments whose defaults are the public
# images. They are kept (tagged pkv-local/*), so a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
started=$SECONDS
phase() { echo "== [$((SECONDS - started)) s] $*"; }

# --- Tools -----------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  need+=(docker-compose) # Debian bookworm packages compose as `docker-compose` (v1)
fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "compose-test needs root to install: ${need[*]}" >&2
    exit 1
  fi
  phase "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
else
  compose_cmd=(docker-compose)
fi

work=$(mktemp -d)
dockerd_pid=
project="pkvtest$$"
compose() { "${compose_cmd[@]}" -p "$project" -f "$repo/docker-compose.yml" --profile app "$@"; }

cleanup() {
  local code=$?
  set +e
  if [ -n "${compose_up:-}" ]; then
    compose down -v --remove-orphans >/dev/null 2>&1
    local left
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$project"
      docker network ls -q --filter "label=com.docker.compose.project=$project"
      docker volume ls -q --filter "label=com.docker.compose.project=$project")
    if [ -n "$left" ]; then
      echo "compose-test: left behind by 'down -v': $left" >&2
      code=1
    fi
  fi
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null
    wait "$dockerd_pid" 2>/dev/null
  fi
  # debootstrap mounts /proc inside its target; never leave it mounted.
  if mountpoint -q "$work/rootfs/proc" 2>/dev/null; then umount "$work/rootfs/proc"; fi
  rm -rf "$work"
  echo "== compose-test: $([ "$code" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - started)) s"
  exit "$code"
}
trap cleanup EXIT

# --- dockerd ---------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  phase "starting dockerd"
  dockerd >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { cat "$work/dockerd.log" >&2; exit 1; }
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; exit 1; }
fi
# The classic builder: it is what docker.io and docker-compose v1 have on Debian bookworm,
# and the Dockerfiles need nothing more.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# --- Base images, made here ------------------------------------------------------------
# The CA bundle of this machine: where a proxy re-signs TLS, it is the one that works for
# crates.io and PyPI.
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca_bundle" ] || { echo "compose-test: no CA bundle at $ca_bundle" >&2; exit 1; }

debian=pkv-local/debian:bookworm
if ! have_image "$debian"; then
  phase "debootstrap: a minimal Debian bookworm"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  cat >"$work/rootfs/etc/apt/sources.list" <<'SOURCES'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  # What the slim images leave out too: package caches, documentation, locales.
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
    "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* \
    "$work"/rootfs/usr/share/locale/* "$work"/rootfs/usr/share/info/*
  tar -C "$work/rootfs" --numeric-owner --exclude='./proc/*' --exclude='./sys/*' \
    --exclude='./dev/*' -c . | docker import - "$debian" >/dev/null
  rm -rf "$work/rootfs"
fi

# A context directory holding the CA bundle (and whatever else is added).
context() {
  rm -rf "$work/ctx" && mkdir -p "$work/ctx" && cp "$ca_bundle" "$work/ctx/ca-certificates.crt"
}

sysroot=$(rustc --print sysroot)
rust_version=$(rustc --version | awk '{print $2}')
rust=pkv-local/rust:$rust_version
if ! have_image "$rust"; then
  phase "building $rust from $debian and this machine's toolchain ($sysroot)"
  context
  mkdir -p "$work/ctx/toolchain/bin"
  cp "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$work/ctx/toolchain/bin/"
  # Hard links where the toolchain is on the same file system: no copy of 500 MB.
  cp -al "$sysroot/lib" "$work/ctx/toolchain/lib" 2>/dev/null \
    || cp -a "$sysroot/lib" "$work/ctx/toolchain/lib"
  docker build -q -t "$rust" --build-arg BASE_IMAGE="$debian" \
    -f docker/local/rust.Dockerfile "$work/ctx" >/dev/null
fi

python=pkv-local/python:3-bookworm
if ! have_image "$python"; then
  phase "building $python from $debian"
  context
  docker build -q -t "$python" --build-arg BASE_IMAGE="$debian" \
    -f docker/local/python.Dockerfile "$work/ctx" >/dev/null
fi

redis=pkv-local/redis:7-bookworm
if ! have_image "$redis"; then
  phase "building $redis from $debian"
  docker build -q -t "$redis" --build-arg BASE_IMAGE="$debian" docker/redis >/dev/null
fi
rm -rf "$work/ctx"

# --- The stack -------------------------------------------------------------------------
export PKV_RUST_IMAGE="$rust" PKV_RUNTIME_IMAGE="$debian" PKV_PYTHON_IMAGE="$python"
export PKV_REDIS_IMAGE="$redis" PKV_IMAGE=pkv-local/pkv:test
export PKV_MAILBOX_IMAGE=pkv-local/example-mailbox:test
phase "building pkv's image (Dockerfile) and the example's"
compose build pkv mailbox

# pkv as an operator runs it: trusting one issuer, here a key made for this run (standing
# in for a Prex exchange), with a secret seed of its own.
keys=$(docker run --rm "$PKV_IMAGE" keygen)
issuer_seed=$(sed -n 's/^seed: //p' <<<"$keys")
export PKV_QUOTA_ISSUERS PKV_SECRET_SEED
PKV_QUOTA_ISSUERS=$(sed -n 's/^did: *//p' <<<"$keys")
PKV_SECRET_SEED=$(docker run --rm "$PKV_IMAGE" keygen | sed -n 's/^seed: //p')

phase "starting redis and pkv"
compose_up=1
compose up -d redis pkv
pkv_container=$(compose ps -q pkv)
health=
for _ in $(seq 1 120); do
  health=$(docker inspect -f '{{.State.Health.Status}}' "$pkv_container")
  [ "$health" = healthy ] && break
  sleep 0.5
done
if [ "$health" != healthy ]; then
  echo "compose-test: pkv is '$health' after 60 s, not healthy" >&2
  docker inspect -f '{{json .State.Health}}' "$pkv_container" >&2
  compose logs pkv >&2
  exit 1
fi
phase "pkv is healthy (its HEALTHCHECK: pkv healthcheck)"

# The token, as the exchange would issue it to the application's owner.
account=mailbox-demo
PKV_TOKEN=$(docker run --rm -e PKV_ISSUER_SEED="$issuer_seed" "$PKV_IMAGE" \
  token mint --quantity 10 --sub "$account")
export PKV_TOKEN

phase "running the example application through pkv"
compose run --rm -T mailbox

phase "checking that a token pkv does not trust gets the application nowhere"
if PKV_TOKEN=not-a-token compose run --rm -T mailbox >"$work/refused.log" 2>&1; then
  cat "$work/refused.log" >&2
  echo "compose-test: the example succeeded without a valid token" >&2
  exit 1
fi
grep -q AuthenticationError "$work/refused.log" || { cat "$work/refused.log" >&2; exit 1; }

phase "checking the keys in the upstream Redis"
compose exec -T redis redis-cli --scan | sort >"$work/keys"
prefix="pkv:t:$account:"
echo "keys in Redis: $(wc -l <"$work/keys") ($(grep -c "^$prefix" "$work/keys" || true) under $prefix)"
# The example's data is there, under the account's prefix...
for key in mailbox:alice:messages mailbox:alice:unread cache:inbox:alice stats:deliveries; do
  grep -qxF "$prefix$key" "$work/keys" || {
    echo "compose-test: $prefix$key is not in Redis; keys:" >&2
    cat "$work/keys" >&2
    exit 1
  }
done
# ...and nothing else is, apart from pkv's ledger.
if grep -v -e "^$prefix" -e '^pkv:ledger:' "$work/keys" >"$work/outside"; then
  echo "compose-test: keys outside the account's namespace and the ledger:" >&2
  cat "$work/outside" >&2
  exit 1
fi

phase "tearing down"
compose down -v --remove-orphans
