#!/usr/bin/env bash
# Install what the search's tests run against (tests/test_search.py):
# Debian's PostgreSQL server (the test starts its own throwaway server on a
# free port) and Chromium (headless, reading optuna-dashboard's page).
# Fails soft: exit 1 with one line saying why, so that .ci/run can warn and go
# on (the tests then fail under CI=true, saying why).
set -uo pipefail
fail() { echo "services_up: $*" >&2; exit 1; }
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$(id -u)" -eq 0 ] || fail "not root: cannot install ${missing[*]}"
command -v apt-get >/dev/null || fail "no apt-get to install ${missing[*]}"
if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -q "${missing[@]}"; } >/tmp/services_up.apt.log 2>&1; then
  tail -n 5 /tmp/services_up.apt.log >&2
  fail "apt-get install ${missing[*]} did not succeed (log: /tmp/services_up.apt.log)"
fi
# Debian starts a cluster of its own on install; the tests use their own.
command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null |
  while read -r version name _; do pg_ctlcluster "$version" "$name" stop 2>/dev/null; done
echo "services_up: installed ${missing[*]}"
