# The two commands of the README:
#   make demo   run the proxy in front of the bundled WeChat emulator
#   make test   run every check CI runs
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: demo test build deps

demo:
	./demo/run.sh

build:
	go build -o bin/caddy ./cmd/caddy
	go build -o bin/wechat-emulator ./cmd/wechat-emulator

# What the tests need beyond Go: redis-server (the Redis fleet test).
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update && apt-get install -y redis-server; \
		else \
			echo "make test needs redis-server: install it (sudo apt-get install redis-server, brew install redis)"; exit 1; \
		fi; }

test: deps
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...
	bash -n xcaddy.sh demo/run.sh
	go test -race -count=1 ./...
