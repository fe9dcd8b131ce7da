# The two commands of the README:
#   make demo   run the proxy in front of the bundled WeChat emulator
#   make test   run every check CI runs
# and the benchmark (not part of CI's pass/fail; its smoke run is):
#   make bench
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: demo test build deps sdk-deps lint ops-check fuzz soak bench bench-smoke

# How many inputs each fuzz target tries in make test; longer by hand:
# make fuzz FUZZTIME=10m. A count, not a duration, by default: Go 1.26's
# fuzz coordinator can report a bare "context deadline exceeded" failure when
# a duration runs out while a worker is mid-input on a busy machine
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME ?= 20000x

demo:
	./demo/run.sh

build:
	go build -o bin/caddy ./cmd/caddy
	go build -o bin/wechat-emulator ./cmd/wechat-emulator

# What the tests need beyond Go: redis-server (the Redis fleet test and the
# benchmark's platform scenario), wrk and nginx (the benchmark's smoke run),
# promtool (the alert rules). Installed with apt-get as root.
deps:
	./scripts/need.sh redis-server:redis-server wrk:wrk nginx:nginx-light promtool:prometheus node:nodejs npm:npm

# The Node SDK the SDK test drives (tests/sdk/node), at its locked version.
# (The Go SDK is tests/sdk/go's own module: go fetches it.)
sdk-deps: deps
	cd tests/sdk/node && npm ci --no-audit --no-fund

lint:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...
	cd bench && go vet ./... && go run $(STATICCHECK) ./...
	cd tests/sdk/go && go vet ./... && go run $(STATICCHECK) ./...
	bash -n xcaddy.sh demo/run.sh demo/setup.sh demo/env.sh bench/run.sh scripts/need.sh .ci/run

# The operator's kit in ops/: the alert rules' syntax and their unit tests.
# (That the rules and the dashboard query metrics the module exports is a
# Go test: TestOperatorKitNamesRealMetrics.)
ops-check:
	promtool check rules ops/alerts.yml
	promtool test rules ops/alerts.test.yml

test: deps sdk-deps lint ops-check
	go test -race -count=1 -timeout 25m ./...
	cd bench && go test -count=1 ./...
	$(MAKE) fuzz
	$(MAKE) bench-smoke

# Each fuzz target for FUZZTIME, from the seed corpora in testdata/fuzz.
fuzz:
	go test -run '^$$' -fuzz '^FuzzErrcode$$' -fuzztime $(FUZZTIME) ./caddymodule/wxhttp
	go test -run '^$$' -fuzz '^FuzzStripToken$$' -fuzztime $(FUZZTIME) ./caddymodule/wxhttp
	go test -run '^$$' -fuzz '^FuzzTokenEndpointPath$$' -fuzztime $(FUZZTIME) ./caddymodule/wxhttp
	go test -run '^$$' -fuzz '^FuzzCaddyfile$$' -fuzztime $(FUZZTIME) ./caddymodule
	go test -run '^$$' -fuzz '^FuzzFlatFields$$' -fuzztime $(FUZZTIME) ./caddymodule/credential

# The soak: load, short token lives, random revocations and token-endpoint
# outages, every request and token counted; one instance, then three sharing
# Redis, 10 minutes each. make test runs both for 30 s.
soak:
	WECHAT_SOAK=10m go test -race -count=1 -run '^TestSoak' -v -timeout 45m ./tests

# The full benchmark: about 17 minutes; results in bench/out/latest.md.
bench:
	./bench/run.sh

# Proves the benchmark and the micro-benchmarks still work: fails on a
# failed request or a missed functional target, never on timings.
bench-smoke:
	go test -run '^$$' -bench . -benchtime 100x ./caddymodule
	./bench/run.sh -smoke -out out/smoke.md
