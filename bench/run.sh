#!/usr/bin/env bash
# Runs the benchmark: builds Caddy with wechat_token and the emulator,
# starts the upstream, the proxies, nginx and Redis, and prints the results
# table (also written to bench/out/latest.md). Flags go to the driver: -h
# lists them; -smoke is the short run CI makes; -only <scenario> runs one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# wrk, nginx and redis-server (the platform scenario's storage) come from
# the distribution.
"$here/../scripts/need.sh" wrk:wrk nginx:nginx-light redis-server:redis-server
cd "$here"
go build -o "$here/out/bench" .
exec "$here/out/bench" -repo "$here/.." "$@"
