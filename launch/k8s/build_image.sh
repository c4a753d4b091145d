#!/usr/bin/env bash
# Build the image of launch/k8s/Dockerfile (default tag seqmnist:0.1.0, or $1).
#
#   launch/k8s/build_image.sh [TAG]
#
# Engine: docker when its daemon answers (it builds the Dockerfile as is,
# pulling tensorflow/tensorflow:2.21.0-gpu), else podman. $SEQMNIST_ENGINE
# (docker|podman) chooses.
#
# With podman, when the Dockerfile's base image cannot be pulled (no container
# registry reachable, as on the project's machines), the same Dockerfile is
# built on a base made from Debian packages instead (`podman build --from`):
# mmdebstrap (through apt's configured Debian mirror) + `podman import`,
# tagged localhost/seqmnist-base:bookworm and reused when it exists. That
# base holds what the Dockerfile uses of the GPU image - python, pip, useradd -
# and, like it, lets pip install system-wide: its EXTERNALLY-MANAGED marker
# (Debian's PEP 668 guard) is removed. TensorFlow then comes from PyPI as a CPU
# build. The Dockerfile itself is not changed.
#
# When this network intercepts TLS (PyPI's certificate signed by a local CA
# the host trusts but the base does not), the host's CA bundle is mounted,
# for the build only and read-only, over the bundle pip uses in the base: the
# image keeps its own. Detected by asking the base's pip bundle, not assumed.
#
# Podman on Debian bookworm (4.3) needs `--runtime runc` (crun fails with
# cgroups in hybrid mode) and explicit ulimits (else "setting rlimit type 7:
# operation not permitted"); tests/test_container.py runs it the same way.
#
# The image is labelled org.seqmnist.source=<digest of the files the
# Dockerfile copies, README.md aside (it only feeds the package's long
# description)>: tests/test_container.py refuses an image built from other
# sources than the work tree's (it would test stale code).
#
# Exit 0 with the image built; else 1 and one line: "build_image: FAILED: ...".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TAG=${1:-seqmnist:0.1.0}
DOCKERFILE=$HERE/Dockerfile
FROM_IMAGE=$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' "$DOCKERFILE" | head -n1)
LOCAL_BASE=${SEQMNIST_LOCAL_BASE:-localhost/seqmnist-base:bookworm}
SUITE=bookworm
# g++ builds the fused RNN op (seqmnist/native/) at `pip install`.
PACKAGES=python3,python3-pip,python3-venv,python-is-python3,ca-certificates,g++

fail() { echo "build_image: FAILED: $*" >&2; exit 1; }
say() { echo "build_image: $*" >&2; }

engine=${SEQMNIST_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null; then
    engine=podman
  else
    fail "no container engine: podman is not installed and no docker daemon answers (.ci/container_up.sh installs podman)"
  fi
fi
cd "$REPO"

# What the Dockerfile copies (README.md aside), hashed as
# tests/test_container.py hashes it.
source_digest() {
  find pyproject.toml setup.py setup.cfg seqmnist gin launch -type f \
      ! -name '*.pyc' ! -name '*.so' ! -path '*/__pycache__/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64
}
LABEL=(--label "org.seqmnist.source=$(source_digest)")

if [ "$engine" = docker ]; then
  say "docker build -f launch/k8s/Dockerfile -t $TAG ."
  docker build "${LABEL[@]}" -f "$DOCKERFILE" -t "$TAG" . \
    || fail "docker build of $TAG from $FROM_IMAGE did not succeed (see above)"
  say "built $TAG with docker"
  exit 0
fi
[ "$engine" = podman ] || fail "SEQMNIST_ENGINE=$engine: expected docker or podman"

PODMAN=(podman)
if command -v runc >/dev/null; then PODMAN+=(--runtime runc); fi
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
"${PODMAN[@]}" info >/dev/null 2>&1 \
  || fail "podman does not work here: $("${PODMAN[@]}" info 2>&1 | tail -n1)"

# The base: the Dockerfile's own when it is here or can be pulled (a short
# name is docker.io's), else the Debian one.
qualified=$FROM_IMAGE
case ${FROM_IMAGE%%/*} in
  *.*|*:*|localhost) ;;
  *) qualified=docker.io/$FROM_IMAGE ;;
esac
from=()
if "${PODMAN[@]}" image exists "$qualified"; then
  say "base $qualified is here"
elif pulled=$(timeout 600 "${PODMAN[@]}" pull -q "$qualified" 2>&1); then
  say "pulled $qualified"
else
  say "cannot pull $qualified ($(echo "$pulled" | tail -n1)); using a Debian $SUITE base instead"
  if "${PODMAN[@]}" image exists "$LOCAL_BASE"; then
    say "reusing $LOCAL_BASE"
  else
    command -v mmdebstrap >/dev/null \
      || fail "cannot pull $qualified and mmdebstrap (to make a Debian base) is not installed"
    work=$(mktemp -d "${TMPDIR:-/var/tmp}/seqmnist-base.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    start=$SECONDS
    say "mmdebstrap --variant=apt --include=$PACKAGES $SUITE (log: $work/mmdebstrap.log)"
    if ! mmdebstrap --variant=apt --include="$PACKAGES" \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        "$SUITE" "$work/rootfs.tar" >"$work/mmdebstrap.log" 2>&1; then
      tail -n 20 "$work/mmdebstrap.log" >&2
      fail "mmdebstrap could not make a Debian $SUITE root filesystem (see above)"
    fi
    "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" \
        "$LOCAL_BASE" >/dev/null \
      || fail "podman import of the Debian root filesystem as $LOCAL_BASE did not succeed"
    rm -rf "$work"
    say "made $LOCAL_BASE in $((SECONDS - start)) s"
  fi
  qualified=$LOCAL_BASE
  from=(--from "$LOCAL_BASE")
fi

# TLS interception: does pip in the base verify PyPI with its own bundle? If
# not, mount the bundle the host's pip uses over it, for the build only.
volumes=()
probe='
import sys, urllib.request, ssl
from pip._vendor import certifi
print(certifi.where())
try:
  urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=30,
                         context=ssl.create_default_context(cafile=certifi.where()))
except Exception as e:
  sys.exit("CERTIFICATE_VERIFY_FAILED" in str(e) and 3 or 4)
'
set +e
bundle=$("${PODMAN[@]}" run --rm "${ULIMITS[@]}" --entrypoint python3 \
           "$qualified" -c "$probe" 2>/dev/null)
probed=$?
set -e
if [ "$probed" -eq 3 ]; then
  host_bundle=
  for c in "${PIP_CERT:-}" "$(pip config get global.cert 2>/dev/null || true)" \
           "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" \
           /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$c" ] && [ -f "$c" ]; then host_bundle=$c; break; fi
  done
  [ -n "$host_bundle" ] \
    || fail "PyPI's TLS certificate is not trusted by pip in $qualified, and no host CA bundle (PIP_CERT, pip config cert, REQUESTS_CA_BUNDLE, SSL_CERT_FILE) was found"
  say "PyPI's certificate is signed by a CA only the host trusts: mounting $host_bundle over $bundle for the build"
  volumes=(--volume "$host_bundle:$bundle:ro")
elif [ "$probed" -ne 0 ]; then
  say "note: could not check PyPI's TLS from $qualified (exit $probed); building as is"
fi

# The image this build replaces, if any: removed once untagged, so that
# rebuilds do not pile up 2.7 GB images.
previous=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
start=$SECONDS
say "podman build ${from[*]} -f launch/k8s/Dockerfile -t $TAG ."
"${PODMAN[@]}" build "${ULIMITS[@]}" "${from[@]}" "${volumes[@]}" "${LABEL[@]}" \
    -f "$DOCKERFILE" -t "$TAG" . \
  || fail "podman build of $TAG on $qualified did not succeed (see above)"
current=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$TAG")
if [ -n "$previous" ] && [ "$previous" != "$current" ] &&
   [ -z "$("${PODMAN[@]}" image inspect --format '{{join .RepoTags ""}}' "$previous" 2>/dev/null)" ]; then
  "${PODMAN[@]}" rmi "$previous" >/dev/null 2>&1 \
    && say "removed the image it replaces (${previous:0:12})" || true
fi
say "built $TAG on $qualified in $((SECONDS - start)) s ($("${PODMAN[@]}" image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.1f GB", $1/1e9}'))"
