#!/usr/bin/env bash
# The demo: the WeChat API emulator on 127.0.0.1:9801 and Caddy with
# wechat_token in front of it on 127.0.0.1:8080. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p bin
go build -o bin/caddy ./cmd/caddy
go build -o bin/wechat-emulator ./cmd/wechat-emulator

# Tokens live 2 minutes here, so renewals show in the log within minutes.
bin/wechat-emulator -listen 127.0.0.1:9801 -ttl 2m -overlap 10s -stable-window 10s &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true' EXIT

# The emulator's demo app (see cmd/wechat-emulator).
export WECHAT_APP_ID=wxd000000000000001
export WECHAT_APP_SECRET=demo_app_secret_0123456789abcdef

cat <<'MSG'
Try, in another terminal:
  curl 'http://127.0.0.1:8080/cgi-bin/user/info?openid=o1'        # token added for you
  curl -X POST 'http://127.0.0.1:9801/_emulator/revoke?appid=wxd000000000000001'
  curl 'http://127.0.0.1:8080/cgi-bin/user/info?openid=o1'        # still errcode 0: refreshed and retried
  curl 'http://127.0.0.1:9801/_emulator/stats'                     # what WeChat saw
MSG
bin/caddy run --config demo/Caddyfile --adapter caddyfile
