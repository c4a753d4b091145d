#!/usr/bin/env bash
# Build the container image (seqmnist:0.1.0) for tests/test_container.py:
# installs Debian's podman, runc and mmdebstrap if no container engine is
# here, then runs launch/k8s/build_image.sh (which makes a Debian base when
# no registry can be pulled from). Fails soft: exit 1 with one line saying
# why, so that .ci/run can warn and go on (the test then skips, saying why).
# The image is rebuilt every time (from the layer cache when nothing changed).
set -uo pipefail
cd "$(dirname "$0")/.."
fail() { echo "container_up: $*" >&2; exit 1; }

if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
  missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)  # crun fails on cgroups v1
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || fail "not root: cannot install ${missing[*]}"
    command -v apt-get >/dev/null || fail "no apt-get to install ${missing[*]}"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q "${missing[@]}"; } >/tmp/container_up.apt.log 2>&1; then
      tail -n 5 /tmp/container_up.apt.log >&2
      fail "apt-get install ${missing[*]} did not succeed (log: /tmp/container_up.apt.log)"
    fi
  fi
fi

start=$SECONDS
if ! nice bash launch/k8s/build_image.sh "$@"; then
  fail "launch/k8s/build_image.sh did not build the image (see above)"
fi
echo "container_up: image built in $((SECONDS - start)) s"
