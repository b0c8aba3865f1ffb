# fedledger — see README.md. Everything here needs only Go, except `make proto`
# (protoc + pinned plugins; see DEVELOPERS.md). Generated code is committed.
GO      ?= go
PKGS    ?= ./...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/fedledger/fedledger/internal/version.Version=$(VERSION)

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1

.PHONY: all build demo test test-race vet bench bench-secure bench-audit fuzz proto proto-tools verify-genproto experiments clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/fedledger ./cmd/fedledger

## demo: the whole federation on loopback with the shipped heart-disease data.
demo: build
	./bin/fedledger demo --data-dir $${FEDLEDGER_DEMO_DIR:-$$(mktemp -d -t fedledger-demo-XXXX)}

## test: what CI runs (.ci/run). vet, unit + integration tests, race detector
## on the packages with goroutines, fuzz seed corpora (run as plain tests).
test: vet
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -race -short -timeout 20m ./coordinator/... ./client/... ./audit/... ./internal/... ./cmd/...

vet:
	$(GO) vet $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m $(PKGS)

## fuzz: every decoder's fuzz target for FUZZTIME each (default 20s); their
## seed corpora also run as plain tests in `make test`.
FUZZTIME ?= 20s
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  dir=$$(dirname $$f); \
	  for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "== $$dir $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$dir; \
	  done; \
	done

## bench-secure: secure-aggregation costs per 1,000,000 parameters, with ratios to plaintext,
## then whole rounds over gRPC+mTLS (4 hospitals), secure vs plaintext, on 14 and 10^6 parameters.
bench-secure:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./aggregation/secure
	$(GO) test -run '^$$' -bench FullRound -benchtime 1x -timeout 30m ./coordinator

## bench-audit: audit-log append latency/throughput on 3 nodes (fsync) and verify time for 10,000 rounds.
bench-audit:
	$(GO) test -run '^$$' -bench 'ClusterAppend|VerifyBundle' -benchtime 1x -timeout 30m ./audit/...

proto-tools:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto:
	cd proto && protoc -I . \
	  --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
	  *.proto

## verify-genproto: fails when the committed generated code drifts from the .proto files.
verify-genproto:
	@tmp=$$(mktemp -d); cp -r proto $$tmp/; \
	  (cd $$tmp/proto && protoc -I . --go_out=. --go_opt=paths=source_relative \
	    --go-grpc_out=. --go-grpc_opt=paths=source_relative *.proto) && \
	  diff -r proto $$tmp/proto && echo "generated code up to date"; rc=$$?; rm -rf $$tmp; exit $$rc

experiments:
	for d in experiments/*/; do case $$d in */internal/) continue;; esac; echo "== $$d"; $(GO) run ./$$d || exit 1; done

clean:
	rm -rf bin
