# mpathfs — the commands that matter:
#   make run    build and mount the built-in default lab (installs fuse3 and fio if missing)
#   make test   everything CI runs on the host: gofmt, vet, staticcheck, unit tests (-race, then GOMAXPROCS=1), end-to-end tests
#   make fuzz   every fuzz target, FUZZTIME (20s) each
#   make bench  the benchmark table against the peers (docs/benchmarks.md)
#   make vm-test  the VM tier (qemu, dm-multipath side by side); see tests/vm/README.md

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/mpathfs
MNT ?= /mnt/mpathfs
STATE_DIR ?= /var/lib/mpathfs
# Debian packages the tests and the lab use.
APT_PKGS := fuse3 fio nbdkit qemu-utils libnbd-bin e2fsprogs util-linux jq kmod libiscsi-bin tgt qemu-block-extra iproute2
APT_CHECK := fusermount3 fio nbdkit qemu-nbd nbdfuse mkfs.ext4 losetup jq iscsi-test-cu tgtd tgtadm ip

.PHONY: all build deps run test test-unit test-e2e lint bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mpathfs

# deps installs the Debian packages the tests need, once.
deps:
	@missing=""; for t in $(APT_CHECK); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing Debian packages (missing:$$missing)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $(APT_PKGS) >/dev/null; \
	fi
	@for t in $(APT_CHECK); do command -v $$t >/dev/null || { echo "deps: $$t still missing after apt-get install"; exit 1; }; done

run: deps build
	@echo "mounting the default lab at $(MNT) (store in $(STATE_DIR)); in another shell:"
	@echo "  fio --name=t --filename=$(MNT)/lab --direct=1 --rw=randrw --bs=4k --iodepth=16 --ioengine=libaio --runtime=60 --time_based --verify=crc32c --verify_backlog=1024"
	@echo "  $(BIN) status;  $(BIN) fault inject vmhba1:C0:T0:L0 --error path-failure"
	mkdir -p $(MNT)
	MPATHFS_STATE_DIR=$(STATE_DIR) $(BIN) mount $(MNT)

# staticcheck at a pinned version, fetched through the Go module proxy on
# first use (not a dependency of the module, not vendored).
STATICCHECK_VERSION := v0.8.2
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# lint: gofmt, go vet, staticcheck, and the repository checks of
# internal/lint (package docs, import layers, no reference outside the
# repository).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(GO) test -count=1 ./internal/lint

# test-unit: the unit tier twice, with -race, then without it on one
# processor (GOMAXPROCS=1), where goroutines interleave only at blocking
# points and code that assumes parallelism (a spinning wait, a test that
# expects two goroutines to make progress together) hangs or fails.
UNIT_PKGS = $$($(GO) list ./... | grep -v /tests/)
test-unit:
	$(GO) test -race -count=1 -timeout 20m $(UNIT_PKGS)
	GOMAXPROCS=1 $(GO) test -p $$(nproc) -count=1 -timeout 20m $(UNIT_PKGS)

test-e2e: build
	$(GO) test -count=1 -timeout 30m -v ./tests/... 2>&1 | tee /tmp/mpathfs-e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; \
	rc=$${PIPESTATUS[0]}; [ $$rc = 0 ] || tools/failed-output.sh /tmp/mpathfs-e2e.log; exit $$rc

test: deps lint test-unit test-e2e

# fuzz: every fuzz target of the module, FUZZTIME each (tools/fuzz.sh finds
# them, so a new target is not forgotten).
FUZZTIME ?= 20s
fuzz:
	GO="$(GO)" FUZZTIME=$(FUZZTIME) tools/fuzz.sh

clean:
	rm -rf bin

-include tests/vm/vm.mk
-include bench/bench.mk
