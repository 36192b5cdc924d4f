# SPDX-License-Identifier: Apache-2.0
# h2split: one Makefile, out of tree into $(BUILD). Quiet unless V=1.
#   make            build the BPF object, its skeleton, h2splitd and h2splitctl
#   make test       deps, layering check, unit tests (cmocka), integration tests (pytest, root)
#   make demo       deps, the before/after demo on a simulated node
#   make sanitize   the same build with ASan+UBSan into build/san (SANITIZE=1)
#   make bench-balance  how the balancer policies treat slow, failing, new and stalled pods
#   make bench-scale    5,000 Services x 10 endpoints: sync, memory, changes, per-stream cost
#   make soak       10 minutes of load while pods scale in and out (H2S_SOAK_SECONDS)
#   make image      the container image (deploy/Dockerfile; deploy/README.md), IMAGE=NAME:TAG
#   make fuzz       libFuzzer targets (tests/fuzz), FUZZ_SECONDS (60) each; fuzz-smoke: 10 s each
#   make test-kernels  the smoke on Debian's 5.10, 6.1 and 6.12 kernels under qemu (KERNELS=...)

.DELETE_ON_ERROR:
.DEFAULT_GOAL := all

SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD ?= build
SANFLAGS :=
endif

CC ?= gcc
CLANG ?= clang
BPFTOOL ?= bpftool
PYTHON ?= /usr/bin/python3
PKGS := libbpf libnghttp2 openssl json-c libmicrohttpd zlib libelf
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' '$(1)' '$(2)';
endif

ABS_BUILD = $(abspath $(BUILD))
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Wshadow -Werror -pthread -D_GNU_SOURCE \
	  -DH2SPLIT_VERSION='"$(VERSION)"' -Iinclude -Iuserspace -I$(BUILD) $(PKG_CFLAGS) $(SANFLAGS)
LDFLAGS += -pthread $(SANFLAGS)
LDLIBS += $(PKG_LIBS) -lm

BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -Iinclude \
	      $(if $(MULTIARCH),-I/usr/include/$(MULTIARCH))

BPF_SRC := bpf/h2split.bpf.c
BPF_OBJ := $(BUILD)/h2split.bpf.o
SKEL := $(BUILD)/h2split.skel.h

# Sources live in one folder per concern (docs/architecture.md), objects in
# the same folders under $(BUILD)/obj. h2splitd links every module;
# h2splitctl only base/ and kernel/, so the CLI cannot grow a dependency on
# the daemon without the link failing.
SRC := $(wildcard userspace/*/*.c userspace/*/*/*.c)
CTL_SRC := $(wildcard userspace/ctl/*.c)
MAINS := userspace/daemon/h2splitd.c $(CTL_SRC)
LIB_SRC := $(filter-out $(MAINS),$(SRC))
obj_of = $(patsubst userspace/%.c,$(BUILD)/obj/%.o,$(1))
LIB_OBJ := $(call obj_of,$(LIB_SRC))
LIB := $(BUILD)/libh2split.a
CTL_LIB_OBJ := $(call obj_of,$(wildcard userspace/base/*.c userspace/kernel/*.c))
CTL_LIB := $(BUILD)/libh2split-ctl.a
BINS := $(BUILD)/h2splitd $(BUILD)/h2splitctl

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: FORCE all deps check-layers test unit integration demo sanitize soak bench bench-balance \
	bench-scale profile capacity fuzz clean format image test-kernels

all: $(BINS) $(BPF_OBJ)

$(BUILD)/obj $(BUILD)/tests:
	$(Q)mkdir -p $@

$(BPF_OBJ): $(BPF_SRC) $(wildcard bpf/*.h) include/h2split_bpf.h | $(BUILD)/obj
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(SKEL): $(BPF_OBJ)
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name h2split > $@

$(BUILD)/obj/%.o: userspace/%.c $(SKEL) | $(BUILD)/obj
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
$(CTL_LIB): $(CTL_LIB_OBJ)
$(LIB) $(CTL_LIB):
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/h2splitd: $(BUILD)/obj/daemon/h2splitd.o $(LIB)
$(BUILD)/h2splitctl: $(call obj_of,$(CTL_SRC)) $(CTL_LIB)
$(BINS):
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB) | $(BUILD)/tests
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) -MMD -MP $< $(LIB) $(LDFLAGS) $(LDLIBS) -lcmocka -o $@

# Fault injection: this test decides which of the daemon's allocations fail.
$(BUILD)/tests/test_stream_oom: LDFLAGS += -Wl,--wrap=malloc

-include $(wildcard $(patsubst %.o,%.d,$(call obj_of,$(SRC))) $(BUILD)/tests/*.d)

# The objects that print the version are rebuilt when it changes (a commit),
# so `h2splitd --version` never names an older tree than it was built from.
VERSION_STAMP := $(BUILD)/version.stamp
$(VERSION_STAMP): FORCE | $(BUILD)/obj
	$(Q)echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@
$(addprefix $(BUILD)/obj/,daemon/admin.o ctl/h2splitctl.o ctl/ctl_pins.o ctl/ctl_status.o \
	daemon/h2splitd.o discovery/k8s_client.o): $(VERSION_STAMP)
FORCE:

deps:
	$(Q)sh .ci/deps

# Includes only go down the folder map (docs/architecture.md).
check-layers:
	$(Q)$(PYTHON) tests/check_layers.py

unit: $(UNIT_BINS)
	$(Q)fail=0; for t in $(UNIT_BINS); do $$t || fail=1; done; exit $$fail

# Under SANITIZE=1 the tests skip their CPU/RSS bounds (H2SPLIT_SANITIZE) and
# ASan keeps a small quarantine, so memory stays near what the daemon uses.
SAN_ENV := $(if $(filter 1,$(SANITIZE)),H2SPLIT_SANITIZE=1 \
	   ASAN_OPTIONS=quarantine_size_mb=16:detect_leaks=1 \
	   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)

integration: all
	$(Q)cd tests/integration && $(SAN_ENV) H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: deps check-layers
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory fuzz-smoke
	$(Q)$(MAKE) --no-print-directory integration

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) tests/demo.py

# The image deploy/kustomization.yaml names (h2split/h2split:<newTag>), built
# with docker, podman or buildah; bases made locally where no registry answers.
IMAGE ?= h2split/h2split:$(shell sed -n 's/^ *newTag: *//p' deploy/kustomization.yaml | head -n 1)
image:
	$(Q)sh deploy/build-image.sh '$(IMAGE)' '$(BUILD)/image' '$(VERSION)'

sanitize:
	$(Q)$(MAKE) --no-print-directory SANITIZE=1 all

# Debian's own kernels booted under qemu, the smoke inside each, one table
# (docs/kernels.md). Not part of `make test`: run it before landing a change
# to bpf/ or userspace/kernel/. Cache: H2S_KERNELS_CACHE (/var/cache/h2split-kernels).
KERNELS ?= 5.10 6.1 6.12
test-kernels: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)KERNELS="$(KERNELS)" H2SPLIT_BUILD=$(ABS_BUILD) sh tests/kernels/kernels.sh

# 10 minutes of load with pods scaling in and out (make test runs 60 s of it).
soak: deps all
	$(Q)cd tests/integration && H2S_SOAK_SECONDS=$${H2S_SOAK_SECONDS:-600} \
		H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) -m pytest -q -p no:cacheprovider test_soak.py

# Benchmarks (tests/bench/): the harness and its C helpers; BENCH_ARGS=--smoke for a short run.
BENCH_BINS := $(BUILD)/bench/grpc_backend $(BUILD)/bench/connect_loop $(BUILD)/bench/balance_load \
	$(BUILD)/bench/conn_rate

$(BUILD)/bench:
	$(Q)mkdir -p $@

$(BUILD)/bench/%: tests/bench/%.c | $(BUILD)/bench
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) $< $(LDFLAGS) $(LDLIBS) -o $@

bench: all $(BENCH_BINS)
	$(Q)H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) tests/bench/h2bench.py $(BENCH_ARGS)

# The balance benchmark (docs/balancing.md); BALANCE_ARGS=--smoke for a short run.
bench-balance: all $(BENCH_BINS)
	$(Q)H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) tests/bench/balance.py $(BALANCE_ARGS)

# The node of a large cluster: sync, memory, change latency and per-stream
# instructions at 5,000 Services x 10 endpoints (SCALE_ARGS, docs/benchmarks.md).
bench-scale: all $(BENCH_BINS)
	$(Q)H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) tests/bench/scale.py $(SCALE_ARGS)

# Hot path profile (instructions, syscalls, mallocs per request; PROFILE_ARGS).
profile: all $(BENCH_BINS)
	$(Q)H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) tests/bench/profile.py $(PROFILE_ARGS)

# 10k idle downstream connections and 100k streams in flight (CAPACITY_ARGS).
capacity: all $(BENCH_BINS)
	$(Q)H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) tests/bench/capacity.py $(CAPACITY_ARGS)

# Fuzzing (tests/fuzz/): libFuzzer targets built with clang, ASan and UBSan,
# against their own instrumented copy of the daemon's modules. `make fuzz`
# runs each for FUZZ_SECONDS on its checked-in seeds plus a working corpus
# in $(BUILD)/fuzz/corpus; `make fuzz-smoke` runs each for FUZZ_SMOKE_SECONDS.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_ARGS ?=
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_FLAGS := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	      -fno-sanitize-recover=undefined
FUZZ_CFLAGS = -std=gnu11 -Wall -Wextra -Wshadow -Werror -pthread -D_GNU_SOURCE \
	      -DH2SPLIT_VERSION='"$(VERSION)"' -Iinclude -Iuserspace -I$(BUILD) $(PKG_CFLAGS) \
	      $(FUZZ_FLAGS)
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_TARGETS))
FUZZ_LIB_OBJ := $(patsubst userspace/%.c,$(FUZZ_DIR)/obj/%.o,$(LIB_SRC))

$(FUZZ_DIR)/obj:
	$(Q)mkdir -p $@

$(FUZZ_DIR)/obj/%.o: userspace/%.c $(SKEL) | $(FUZZ_DIR)/obj
	$(call msg,CC-FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_DIR)/libh2split.a: $(FUZZ_LIB_OBJ)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(FUZZ_DIR)/libh2split.a
	$(call msg,LD-FUZZ,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_DIR)/libh2split.a $(PKG_LIBS) -lm -o $@

-include $(wildcard $(FUZZ_LIB_OBJ:.o=.d))

# One target after another, each for $(1) seconds; stops at the first crash
# (the reproducer is left in $(FUZZ_DIR)/artifacts).
fuzz_run = $(Q)set -e; for t in $(FUZZ_TARGETS); do \
	mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts; \
	echo "  FUZZ     $$t ($(1) s)"; \
	$(FUZZ_DIR)/fuzz_$$t -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- $(FUZZ_ARGS) \
		$(FUZZ_DIR)/corpus/$$t tests/fuzz/corpus/$$t 2>$(FUZZ_DIR)/$$t.log || \
		{ tail -n 60 $(FUZZ_DIR)/$$t.log; exit 1; }; \
	grep -E '^stat::(number_of_executed_units|new_units_added)' $(FUZZ_DIR)/$$t.log | \
		sed 's/^/           /'; \
	done

.PHONY: fuzz-build fuzz-smoke
fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-smoke: fuzz-build
	$(call fuzz_run,$(FUZZ_SMOKE_SECONDS))

format:
	$(Q)clang-format -i bpf/*.c include/*.h $(SRC) $(wildcard userspace/*/*.h userspace/*/*/*.h) \
		tests/unit/*.c

clean:
	$(Q)rm -rf build
