#!/usr/bin/env bash
# The demo: the WeChat API emulator on 127.0.0.1:9801 and Caddy with
# wechat_token in front of it on 127.0.0.1:8080. Ctrl-C stops both.
#
# Caddy keeps to itself: its storage and autosaved config live in a
# temporary directory removed on exit, and its admin endpoint is on
# 127.0.0.1:2020 ($DEMO_ADMIN), so it neither touches a Caddy you run
# yourself nor adopts a token a previous demo's emulator issued.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/caddy-wechat-demo.XXXXXX")
DEMO_ADMIN=${DEMO_ADMIN:-127.0.0.1:2020}
export DEMO_DIR DEMO_ADMIN
export XDG_DATA_HOME="$DEMO_DIR/data" XDG_CONFIG_HOME="$DEMO_DIR/config"
emulator=
cleanup() {
	[ -n "$emulator" ] && kill "$emulator" 2>/dev/null || true
	rm -rf "$DEMO_DIR"
}
trap cleanup EXIT

# build OUTPUT PACKAGE, saying what it does: a cold build downloads and
# compiles Caddy, which takes a minute or two and would otherwise be silent.
build() {
	local start=$SECONDS
	echo "building $1 ..."
	go build -o "$1" "$2" &
	local pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		if kill -0 "$pid" 2>/dev/null && (((SECONDS - start) % 15 == 0)); then
			echo "  still building $1 ($((SECONDS - start)) s; the first build downloads and compiles Caddy)"
		fi
	done
	wait "$pid"
	echo "  built $1 in $((SECONDS - start)) s"
}
mkdir -p bin
build bin/caddy ./cmd/caddy
build bin/wechat-emulator ./cmd/wechat-emulator

# Tokens live 2 minutes here, so renewals show in the log within minutes.
bin/wechat-emulator -listen 127.0.0.1:9801 -ttl 2m -overlap 10s -stable-window 10s &
emulator=$!

# The emulator's demo app (see cmd/wechat-emulator).
export WECHAT_APP_ID=wxd000000000000001
export WECHAT_APP_SECRET=demo_app_secret_0123456789abcdef

cat <<MSG

Try, in another terminal:
  curl 'http://127.0.0.1:8080/cgi-bin/user/info?openid=o1'        # token added for you
  curl -X POST 'http://127.0.0.1:9801/_emulator/revoke?appid=$WECHAT_APP_ID'
  curl 'http://127.0.0.1:8080/cgi-bin/user/info?openid=o1'        # still errcode 0: refreshed and retried
  curl 'http://127.0.0.1:9801/_emulator/stats'                     # what WeChat saw
  curl 'http://$DEMO_ADMIN/wechat_token/apps'                    # the token's health (never the token)
  curl -X POST 'http://$DEMO_ADMIN/wechat_token/apps/$WECHAT_APP_ID/refresh?force=1'
  curl 'http://$DEMO_ADMIN/metrics' | grep caddy_wechat

MSG
bin/caddy run --config demo/Caddyfile --adapter caddyfile
