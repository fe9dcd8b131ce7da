# The two commands of the README:
#   make demo   run the proxy in front of the bundled WeChat emulator
#   make test   run every check CI runs
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: demo test build

demo:
	./demo/run.sh

build:
	go build -o bin/caddy ./cmd/caddy
	go build -o bin/wechat-emulator ./cmd/wechat-emulator

test:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...
	bash -n xcaddy.sh demo/run.sh
	go test -race -count=1 ./...
