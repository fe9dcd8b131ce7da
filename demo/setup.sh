#!/usr/bin/env bash
# What WeChat would have done before the tour starts: push the platform its
# component_verify_ticket, and three accounts' authorizations, through the
# emulator's delivery (WeChat's 5 s timeout and re-deliveries). Needs the
# emulator and Caddy running, and demo/env.sh sourced.
set -euo pipefail
push() {
	curl -fsS -X POST "$DEMO_EMULATOR/_emulator/component_push?appid=$WX_COMPONENT_APPID&url=$DEMO_PROXY/platform/events&$1" >/dev/null
}
push "info_type=component_verify_ticket"
for account in $DEMO_ACCOUNTS; do
	push "info_type=authorized&authorizer_appid=$account"
done
