#!/usr/bin/env bash
# The demo: the WeChat API emulator on 127.0.0.1:9801 and one Caddy on
# 127.0.0.1:8080 configured for every credential family (an Official
# Account and its Mini Program login, JS-SDK signing, a WeCom app, a
# third-party platform with three authorized accounts, message push), then
# a short tour to paste. Ctrl-C stops everything.
#
# Caddy keeps to itself: its storage and autosaved config live in a
# temporary directory removed on exit, and its admin endpoint is on
# 127.0.0.1:2020 ($DEMO_ADMIN), so it neither touches a Caddy you run
# yourself nor adopts a token a previous demo's emulator issued.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/caddy-wechat-demo.XXXXXX")
export DEMO_DIR
# shellcheck source=demo/env.sh
. demo/env.sh
export XDG_DATA_HOME="$DEMO_DIR/data" XDG_CONFIG_HOME="$DEMO_DIR/config"
emulator= caddy=
cleanup() {
	[ -n "$caddy" ] && kill "$caddy" 2>/dev/null || true
	[ -n "$emulator" ] && kill "$emulator" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$DEMO_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
bin/wechat-emulator -listen "$DEMO_EMULATOR_ADDR" -ttl 2m -overlap 10s -stable-window 10s \
	-component "$WX_COMPONENT_APPID:$WX_COMPONENT_APPSECRET:$WX_COMPONENT_TOKEN:$WX_COMPONENT_AES_KEY" &
emulator=$!

bin/caddy run --config demo/Caddyfile --adapter caddyfile &
caddy=$!
for _ in $(seq 1 100); do
	curl -fsS -o /dev/null "http://$DEMO_ADMIN/config/" 2>/dev/null && break
	kill -0 "$caddy" 2>/dev/null || { echo "caddy did not start"; exit 1; }
	sleep 0.2
done
demo/setup.sh

# The tour, with the demo's addresses and credentials written out.
{
	echo
	echo "The proxy is up. Try, in another terminal:"
	while IFS= read -r line; do
		case "$line" in
		"## "*) printf '\n  # %s\n' "${line#\#\# }" ;;
		'$ '*)
			cmd=${line#\$ }
			for var in DEMO_PROXY DEMO_EMULATOR DEMO_ADMIN WECHAT_APP_ID WECHAT_PUSH_TOKEN WECHAT_PUSH_AES_KEY; do
				cmd=${cmd//\$$var/${!var}}
			done
			printf '  %s\n' "$cmd"
			;;
		esac
	done <demo/tour.txt
	echo
} >&2
wait "$caddy"
