#!/usr/bin/env bash
# Usage: scripts/need.sh COMMAND:DEBIAN_PACKAGE ...
# Makes sure each command exists, installing the missing ones' packages with
# apt-get when running as root (as CI does); otherwise says what to install.
set -euo pipefail
missing=()
for pair in "$@"; do
	cmd="${pair%%:*}" pkg="${pair#*:}"
	command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "needed and missing: ${missing[*]} (sudo apt-get install ${missing[*]}, or your system's packages)" >&2
	exit 1
fi
apt-get update -qq
# Installing a server must not start the distribution's own instance of it.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
	trap 'rm -f "$policy"' EXIT
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
