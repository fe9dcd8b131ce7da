#!/usr/bin/env bash
# Runs the benchmark: builds Caddy with wechat_token and the emulator,
# starts the upstream, the proxies and nginx, and prints the results table
# (also written to bench/out/latest.md). Flags go to the driver: -h lists
# them; -smoke is the short run CI makes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# wrk and nginx come from the distribution.
"$here/../scripts/need.sh" wrk:wrk nginx:nginx-light
cd "$here"
go build -o "$here/out/bench" .
exec "$here/out/bench" -repo "$here/.." "$@"
