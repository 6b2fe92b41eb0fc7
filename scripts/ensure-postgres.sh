#!/usr/bin/env bash
# Start the local PostgreSQL cluster if this machine has one and it is down. Never fails the build:
# without PostgreSQL the tests run on SQLite and report the PostgreSQL half as skipped
# (CI sets BATON_REQUIRE_POSTGRES=1, so there a missing server fails the run instead).
set -u
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$version" ]; then
    echo "starting PostgreSQL $version ..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>&1 || true
    for _ in $(seq 1 20); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 0.5; done
  fi
fi
echo "PostgreSQL is not available on 127.0.0.1:5432: its tests will be skipped." >&2
exit 0
