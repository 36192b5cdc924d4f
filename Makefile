# SPDX-License-Identifier: Apache-2.0
# h2split: one Makefile, out of tree into $(BUILD). Quiet unless V=1.
#   make            build the BPF object, its skeleton, h2splitd and h2splitctl
#   make test       deps, unit tests (cmocka), integration tests (pytest, root)
#   make demo       deps, the before/after demo on a simulated node
#   make sanitize   the same build with ASan+UBSan into build/san (SANITIZE=1)

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

MAINS := userspace/h2splitd.c userspace/h2splitctl.c
LIB_SRC := $(filter-out $(MAINS),$(wildcard userspace/*.c))
LIB_OBJ := $(patsubst userspace/%.c,$(BUILD)/obj/%.o,$(LIB_SRC))
LIB := $(BUILD)/libh2split.a
BINS := $(BUILD)/h2splitd $(BUILD)/h2splitctl

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all deps test unit integration demo sanitize bench fuzz clean install format

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
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/%: $(BUILD)/obj/%.o $(LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB) | $(BUILD)/tests
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) -MMD -MP $< $(LIB) $(LDFLAGS) $(LDLIBS) -lcmocka -o $@

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/tests/*.d)

deps:
	$(Q)sh .ci/deps

unit: $(UNIT_BINS)
	$(Q)fail=0; for t in $(UNIT_BINS); do $$t || fail=1; done; exit $$fail

integration: all
	$(Q)cd tests/integration && H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory integration

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)H2SPLIT_BUILD=$(ABS_BUILD) $(PYTHON) tests/demo.py

sanitize:
	$(Q)$(MAKE) --no-print-directory SANITIZE=1 all

format:
	$(Q)clang-format -i bpf/*.c include/*.h userspace/*.c userspace/*.h tests/unit/*.c

clean:
	$(Q)rm -rf build
