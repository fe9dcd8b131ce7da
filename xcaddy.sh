#!/usr/bin/env bash
# Builds the same Caddy as cmd/caddy, with xcaddy: Caddy's standard modules,
# the Redis storage module, and wechat_token from this checkout.
# Output: ./bin/caddy (or $OUTPUT).
#   ./xcaddy.sh                      # Caddy v2.11.9
#   CADDY_VERSION=v2.11.9 OUTPUT=/usr/local/bin/caddy ./xcaddy.sh
set -euo pipefail
cd "$(dirname "$0")"

CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
XCADDY_VERSION=${XCADDY_VERSION:-v0.4.5}
OUTPUT=${OUTPUT:-$PWD/bin/caddy}
mkdir -p "$(dirname "$OUTPUT")"

if command -v xcaddy >/dev/null 2>&1; then
	xcaddy=(xcaddy)
else
	xcaddy=(go run "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION}")
fi

# The @v0.0.0 pins the local replacement to a version, so that go never asks
# a module proxy about this module (some proxies answer 403 rather than 404
# for unknown modules, which go does not treat as "use the replacement").
"${xcaddy[@]}" build "$CADDY_VERSION" \
	--output "$OUTPUT" \
	--with github.com/pberkel/caddy-storage-redis@v1.8.1 \
	--with github.com/caddy-wechat/caddy-wechat@v0.0.0=.
"$OUTPUT" list-modules | grep -q '^http.handlers.wechat_token$'
"$OUTPUT" list-modules | grep -q '^caddy.storage.redis$'
echo "built $OUTPUT with wechat_token and storage redis"
