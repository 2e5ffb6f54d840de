# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
# skmesh build. Everything generated goes to $(OUT); `V=1` shows full commands.

OUT		?= build
CLANG		?= clang
CC		?= gcc
BPFTOOL		?= bpftool
ARCH		:= $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
PKG_CFLAGS	:= $(shell pkg-config --cflags libbpf yaml-0.1 jansson openssl libnghttp2 libmicrohttpd zlib libcurl libprotobuf-c 2>/dev/null)
PKG_LIBS	:= $(shell pkg-config --libs libbpf yaml-0.1 jansson libnl-route-3.0 openssl libnghttp2 libmicrohttpd zlib libcurl libprotobuf-c 2>/dev/null)
NL_CFLAGS	:= $(shell pkg-config --cflags libnl-route-3.0 2>/dev/null)

CFLAGS		?= -O2 -g
WARN		:= -Wall -Wextra -Wno-unused-parameter -Wshadow -Wformat=2 -Wmissing-prototypes
ALL_CFLAGS	:= $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -Iinclude -I$(OUT) -I$(OUT)/proto \
		   $(PKG_CFLAGS) $(NL_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS		:= $(PKG_LIBS) -lelf -lz $(EXTRA_LDLIBS)

# clang's own system include dirs, passed with -idirafter so BPF code finds
# <asm/...> headers of the host without pulling in glibc's.
CLANG_SYS_INCLUDES := $(shell $(CLANG) -v -E - </dev/null 2>&1 \
	| sed -n '/<...> search starts here:/,/End of search list./{ s| \(/.*\)|-idirafter \1|p }')
BPF_CFLAGS	:= -g -O2 --target=bpf -D__TARGET_ARCH_$(ARCH) -mcpu=v3 \
		   -Wall -Wextra -Werror -Wno-unused-parameter \
		   -Iinclude -Ibpf -I$(OUT) $(CLANG_SYS_INCLUDES)

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-9s %s\n' "$(1)" "$(2)";
endif

.DELETE_ON_ERROR:
.SECONDARY:
.PHONY: all clean deps test test-unit test-e2e demo bench asan check-bpffs install k8s-servers \
	fuzz fuzz-build fuzz-bins

AGENT_SRCS	:= $(wildcard agent/*.c)
AGENT_OBJS	:= $(patsubst agent/%.c,$(OUT)/agent/%.o,$(AGENT_SRCS))
# skmesh-cni's field checks, shared with meshd's side of its socket
CNI_SHARED_OBJS	:= $(OUT)/cni/cnicheck.o
AGENT_OBJS	+= $(CNI_SHARED_OBJS)
# protobuf-c's code for Istio's certificate service (proto/ca.proto) and
# the google.protobuf.Struct it uses, generated at build time
PROTOC_C	?= protoc-c
PROTO_INC	?= /usr/include
PROTO_SRCS	:= $(OUT)/proto/ca.pb-c.c $(OUT)/proto/google/protobuf/struct.pb-c.c
PROTO_HDRS	:= $(PROTO_SRCS:.c=.h)
PROTO_OBJS	:= $(PROTO_SRCS:.c=.o)
AGENT_OBJS	+= $(PROTO_OBJS)
AGENT_LIB_OBJS	:= $(filter-out $(OUT)/agent/main.o,$(AGENT_OBJS))
BPF_HDRS	:= include/skmesh.h $(wildcard bpf/lib/*.h)

# Fuzz targets: each tests/fuzz/fuzz_NAME.c defines LLVMFuzzerTestOneInput
# (and maybe LLVMFuzzerInitialize); its seeds are tests/fuzz/corpus/NAME/.
# The ordinary build links each with tests/fuzz/replay.c as
# $(OUT)/tests/fuzz/replay_NAME, which tests/run replays the corpus with.
FUZZ_NAMES	:= $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_HDRS	:= $(wildcard tests/fuzz/*.h)

BINS		:= $(OUT)/meshd $(OUT)/meshctl $(OUT)/bench/sockperf $(OUT)/bench/skm-bare \
		   $(OUT)/tests/unit_tests $(OUT)/tests/policy-eval $(OUT)/tests/mkcert \
		   $(OUT)/tests/kube-watch $(OUT)/tests/cnisrv-echo $(OUT)/tests/podscan-find \
		   $(OUT)/tests/ca-ask \
		   $(patsubst %,$(OUT)/tests/fuzz/replay_%,$(FUZZ_NAMES)) $(OUT)/skmesh-cni \
		   $(OUT)/skmesh-ca $(OUT)/bench/ca-load

all: $(BINS)

# --- vmlinux.h: regenerated to a temp file, moved in only when it changed.
$(OUT)/vmlinux.h: | $(OUT)
	$(call msg,GEN,$@)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp
	$(Q)if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

$(OUT) $(OUT)/agent $(OUT)/tools $(OUT)/bench $(OUT)/tests $(OUT)/tests/fuzz $(OUT)/fuzz:
	$(Q)mkdir -p $@

# --- BPF objects and skeletons
$(OUT)/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) $(OUT)/vmlinux.h | $(OUT)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(OUT)/bench/%.bpf.o: bench/%.bpf.c $(BPF_HDRS) $(OUT)/vmlinux.h | $(OUT)/bench
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(OUT)/%.skel.h: $(OUT)/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< > $@.tmp && mv $@.tmp $@

# --- protobuf-c: both files in one run, so struct.pb-c.h is where ca.pb-c.h
# includes it from
$(PROTO_SRCS) $(PROTO_HDRS) &: proto/ca.proto $(PROTO_INC)/google/protobuf/struct.proto
	$(call msg,PROTOC-C,$(OUT)/proto/ca.pb-c.c)
	$(Q)mkdir -p $(OUT)/proto
	$(Q)$(PROTOC_C) --c_out=$(OUT)/proto -Iproto -I$(PROTO_INC) proto/ca.proto \
		$(PROTO_INC)/google/protobuf/struct.proto

# generated code: no warning flags of ours (it is protoc-c's)
$(OUT)/proto/%.pb-c.o: $(OUT)/proto/%.pb-c.c $(PROTO_HDRS)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) -std=gnu11 -I$(OUT)/proto $(EXTRA_CFLAGS) -c $< -o $@

# --- meshd
$(OUT)/agent/%.o: agent/%.c $(wildcard agent/*.h) include/skmesh.h $(OUT)/skmesh.skel.h \
		  $(OUT)/revoke.skel.h $(PROTO_HDRS) | $(OUT)/agent
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent -c $< -o $@

$(OUT)/meshd: $(AGENT_OBJS)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

# --- meshctl
$(OUT)/meshctl: tools/meshctl.c tools/meshctl-ca.c tools/meshctl-ca.h $(OUT)/agent/certs.o \
		 include/skmesh.h | $(OUT)
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent tools/meshctl.c tools/meshctl-ca.c $(OUT)/agent/certs.o \
		-o $@ $(LDLIBS)

# --- skmesh-cni, the chained CNI plugin: its own binary, on jansson only
CNI_HDRS	:= $(wildcard cni/*.h) include/skmesh-cni.h

$(OUT)/cni:
	$(Q)mkdir -p $@

$(OUT)/cni/%.o: cni/%.c $(CNI_HDRS) | $(OUT)/cni
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(OUT)/skmesh-cni: $(OUT)/cni/cni.o $(OUT)/cni/main.o $(CNI_SHARED_OBJS)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $^ -o $@ $(shell pkg-config --libs jansson) $(EXTRA_LDLIBS)

# its fuzz target and the unit tests also link the plugin's parser
$(OUT)/tests/fuzz/replay_cni $(OUT)/fuzz/fuzz_cni $(OUT)/tests/unit_tests: $(OUT)/cni/cni.o
$(OUT)/tests/fuzz/replay_cni $(OUT)/fuzz/fuzz_cni $(OUT)/tests/unit_tests: \
	LDLIBS := $(OUT)/cni/cni.o $(LDLIBS)

# --- skmesh-ca, the CA service: its own binary (the root key's only
# process), over the agent's objects as an archive so only what it uses
# is linked in
CA_OBJS		:= $(patsubst ca/%.c,$(OUT)/ca/%.o,$(wildcard ca/*.c))
CA_LIB_OBJS	:= $(filter-out $(OUT)/ca/main.o,$(CA_OBJS))

$(OUT)/ca:
	$(Q)mkdir -p $@

$(OUT)/ca/%.o: ca/%.c $(wildcard ca/*.h) $(wildcard agent/*.h) $(PROTO_HDRS) | $(OUT)/ca
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent -Ica -c $< -o $@

$(OUT)/libskmesh.a: $(AGENT_LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(OUT)/skmesh-ca: $(CA_OBJS) $(OUT)/libskmesh.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $(CA_OBJS) $(OUT)/libskmesh.a -o $@ $(LDLIBS) -lpthread

# the CA's fuzz target links the service's own objects too
$(OUT)/tests/fuzz/replay_ca $(OUT)/fuzz/fuzz_ca: $(CA_LIB_OBJS)
$(OUT)/tests/fuzz/replay_ca $(OUT)/fuzz/fuzz_ca: LDLIBS := $(CA_LIB_OBJS) $(LDLIBS)
$(OUT)/tests/fuzz/replay_ca $(OUT)/fuzz/fuzz_ca: ALL_CFLAGS += -Ica

# --- benchmarks
$(OUT)/bench/sockperf: bench/sockperf.c | $(OUT)/bench
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $< -o $@ -lm

# bench/ca's load generator: CreateCertificate calls over nghttp2
$(OUT)/bench/ca-load: bench/ca-load.c $(OUT)/libskmesh.a $(PROTO_HDRS) | $(OUT)/bench
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent $< $(OUT)/libskmesh.a -o $@ $(LDLIBS) -lpthread

$(OUT)/bench/skm-bare: bench/bare.c $(OUT)/bench/bare.skel.h | $(OUT)/bench
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -I$(OUT)/bench $< -o $@ $(LDLIBS)

# --- unit tests (cmocka) over the agent's library objects
# (and skmesh-ca's connection, ca/conn.c)
$(OUT)/tests/unit_tests: $(wildcard tests/unit/*.c) $(AGENT_LIB_OBJS) $(OUT)/ca/conn.o | $(OUT)/tests
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent -Ica $(wildcard tests/unit/*.c) $(AGENT_LIB_OBJS) \
		$(OUT)/ca/conn.o -o $@ $(LDLIBS) -lcmocka

# --- test tools: the policy evaluator on its own, for kernel-vs-user tests
$(OUT)/tests/policy-eval: tests/tools/policy-eval.c $(AGENT_LIB_OBJS) | $(OUT)/tests
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent $< $(AGENT_LIB_OBJS) -o $@ $(LDLIBS)

# --- test tool: meshd's Kubernetes list-then-watch on its own (cluster-mode tests)
$(OUT)/tests/kube-watch: tests/tools/kube-watch.c $(AGENT_LIB_OBJS) | $(OUT)/tests
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent $< $(AGENT_LIB_OBJS) -o $@ $(LDLIBS) -lpthread

# --- test tools: meshd's CNI socket on its own, with an owner that answers
# after a delay; meshd's /proc scan for running pods on its own
$(OUT)/tests/cnisrv-echo $(OUT)/tests/podscan-find $(OUT)/tests/ca-ask: $(OUT)/tests/%: tests/tools/%.c \
		$(AGENT_LIB_OBJS) | $(OUT)/tests
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent $< $(AGENT_LIB_OBJS) -o $@ $(LDLIBS)

# --- test tool: workload certificates with chosen validity, for the tunnel tests
$(OUT)/tests/mkcert: tests/tools/mkcert.c $(OUT)/agent/certs.o | $(OUT)/tests
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent $< $(OUT)/agent/certs.o -o $@ $(LDLIBS)

# --- fuzz targets, replayed: the corpus as regression tests (tests/run fuzz)
$(OUT)/tests/fuzz/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(FUZZ_HDRS) $(AGENT_LIB_OBJS) \
			    | $(OUT)/tests/fuzz
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent -include tests/fuzz/fuzz.h $< tests/fuzz/replay.c \
		$(AGENT_LIB_OBJS) -o $@ $(LDLIBS)

# --- fuzz targets under libFuzzer: built by `make fuzz-build` into
# $(FUZZ_OUT), where every object is clang's with the sanitizers.
$(OUT)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_HDRS) $(AGENT_LIB_OBJS) | $(OUT)/fuzz
	$(call msg,LINK,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Iagent -include tests/fuzz/fuzz.h -fsanitize=fuzzer $< \
		$(AGENT_LIB_OBJS) -o $@ $(LDLIBS)

FUZZ_OUT	?= build-fuzz
FUZZ_SECONDS	?= 60
FUZZ_SAVE	?= 0
FUZZ_SAN	:= -fsanitize=address,undefined -fno-sanitize-recover=undefined \
		   -fno-omit-frame-pointer
# clang, unlike gcc, asks for a format attribute on callbacks that pass a
# va_list on (libbpf's and libmicrohttpd's log hooks, whose types are theirs)
FUZZ_WARN	:= -Wno-format-nonliteral

fuzz-build:
	$(Q)printf 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }\n' | \
		$(CLANG) -x c - -fsanitize=fuzzer,address,undefined -o /dev/null 2>/dev/null || \
		{ echo "make fuzz: $(CLANG) cannot link libFuzzer with ASan and UBSan:" \
		       "install clang's runtimes (Debian: libclang-rt-dev; make deps does)" >&2; exit 1; }
	$(Q)$(MAKE) --no-print-directory OUT=$(FUZZ_OUT) CC=$(CLANG) \
		EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN) $(FUZZ_WARN)" \
		EXTRA_LDLIBS="$(FUZZ_SAN)" fuzz-bins

# (in that sub-make) every target's binary
fuzz-bins: $(patsubst %,$(OUT)/fuzz/fuzz_%,$(FUZZ_NAMES))
	@:

# Every target for FUZZ_SECONDS each; the last two lines are
# "fuzz_targets N" and "fuzz_crashes N". FUZZ_SAVE=1 merges what adds
# coverage into the repo's corpus (tests/fuzz/run says more).
fuzz: fuzz-build
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SAVE=$(FUZZ_SAVE) ./tests/fuzz/run $(FUZZ_OUT) \
		$(FUZZ_NAMES)

# --- one-command entry points
deps:
	$(Q)./scripts/deps.sh

# Kubernetes' own servers for the cluster-mode tests, built once from the
# Go module proxy into a cache outside the repo (tests/k8s/README.md).
k8s-servers:
	$(Q)./scripts/k8s-servers.sh

test: deps k8s-servers
	$(Q)$(MAKE) --no-print-directory all
	$(Q)./tests/run

test-unit: all
	$(Q)./tests/run unit

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)./scripts/demo.sh

bench: deps k8s-servers
	$(Q)$(MAKE) --no-print-directory all
	$(Q)./bench/same-node
	$(Q)./bench/policy-scale
	$(Q)./bench/tunnel
	$(Q)./bench/telemetry
	$(Q)./bench/cluster
	$(Q)./bench/ca

# ASan/UBSan build of the user-space parts into build-asan/, then the tests.
asan: k8s-servers
	$(Q)$(MAKE) --no-print-directory OUT=build-asan \
		EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
		EXTRA_LDLIBS="-fsanitize=address,undefined" all
	$(Q)SKM_BUILD=build-asan ./tests/run

# meshd, skmesh-ca, meshctl and meshctl's manual page under $(DESTDIR)$(PREFIX), skmesh-cni
# under $(DESTDIR)$(CNI_BINDIR).
PREFIX		?= /usr/local
# where a container runtime looks for CNI plugins (CNI_PATH)
CNI_BINDIR	?= /opt/cni/bin
install: $(OUT)/meshd $(OUT)/meshctl $(OUT)/skmesh-cni $(OUT)/skmesh-ca
	$(Q)install -D -m 0755 $(OUT)/meshd $(DESTDIR)$(PREFIX)/sbin/meshd
	$(Q)install -D -m 0755 $(OUT)/skmesh-ca $(DESTDIR)$(PREFIX)/sbin/skmesh-ca
	$(Q)install -D -m 0755 $(OUT)/skmesh-cni $(DESTDIR)$(CNI_BINDIR)/skmesh-cni
	$(Q)install -D -m 0755 $(OUT)/meshctl $(DESTDIR)$(PREFIX)/bin/meshctl
	$(Q)install -D -m 0644 docs/meshctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/meshctl.1

clean:
	$(Q)rm -rf $(OUT) build-asan $(FUZZ_OUT)
