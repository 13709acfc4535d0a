# mnist-c: a handwritten-digit recognition service in C.
#
#   make            build build/mnist-{train,eval,predict,server,glyphs,outliers,strokes}
#   make run        install what is missing, build, serve on port 8080
#   make test       install what tests need, fetch data, run every test
#   make format     clang-format the C sources (make format-check: only check)
#   make data       MNIST IDX files into data/mnist/ (sha256 verified)
#   make glyphs     printed digits and letters from Debian fonts, data/glyphs/
#   make robustness the model cards' robustness and beyond-MNIST tables
#   make train      retrain the shipped models from scratch (recorded seeds)
#   make asan       address+undefined sanitizer build, runs unit+integration
#                   (its reload run does 50 reloads: no leak may remain)
#   make reload-soak  64 connections for 20 s while the served model is
#                   reloaded 50 times (SIGHUP and API, good and bad files)
#   make coverage   gcov build running unit+integration+cli; lcov summary,
#                   HTML report in build/coverage/html, floors enforced
#   make rolling    rolling update behind HAProxy under load: the drain loses nothing
#   make kube-play  the Kubernetes Deployment under podman (after the Docker check)
#   make fuzz       every libFuzzer harness for FUZZ_SECONDS (60) each;
#                   make fuzz-long: 600 s each (see README, "Security")
#   make tsan       thread sanitizer build: the registry's unit test,
#                   concurrent tests, a mixed load with reloads, the
#                   reload suite (make reload-tsan: the same)
#   make soak       wrk for SOAK_SECONDS (300), RSS and fds sampled
#   make bench      benchmarks side by side with PyTorch
#   make clean

CC      ?= cc
BUILD   ?= build
# -O2 vectorises only loops it can prove need no run-time checks; the
# element-wise layer loops (batch norm, ReLU, dropout) need them. Exact:
# no reassociation, no FMA contraction without -march. -fno-math-errno lets
# sqrtf inline (and loops using it vectorise); nothing reads errno after math.
OPT     ?= -O2 -fvect-cost-model=dynamic
SAN     ?=
PKGS    := libcjson libpng libmicrohttpd zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
# FreeType: only mnist-glyphs links it (printed characters from font files).
FT_CFLAGS := $(shell pkg-config --cflags freetype2 2>/dev/null || echo -I/usr/include/freetype2)
FT_LIBS   := $(shell pkg-config --libs freetype2 2>/dev/null || echo -lfreetype)

CFLAGS  ?=
CFLAGS  += -std=c11 -Wall -Wextra $(OPT) -fno-math-errno -g -pthread -D_GNU_SOURCE \
           -fno-strict-aliasing -I. $(PKG_CFLAGS) $(SAN)
LDFLAGS += -pthread $(SAN)
LDLIBS  += $(PKG_LIBS) -lm

PORT    ?= 8080

NN_SRC     := $(wildcard nn/*.c)
IMAGE_SRC  := $(wildcard image/*.c)
PIPE_SRC   := $(wildcard pipeline/*.c)
CLI_SRC    := $(wildcard cli/*.c)
SERVER_SRC := $(wildcard server/*.c)
NN_OBJ     := $(NN_SRC:%.c=$(BUILD)/obj/%.o)
IMAGE_OBJ  := $(IMAGE_SRC:%.c=$(BUILD)/obj/%.o)
PIPE_OBJ   := $(PIPE_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ    := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/obj/%.o)
LIBNN      := $(BUILD)/libnn.a
LIBIMAGE   := $(BUILD)/libimage.a
# The serving pipeline sits above image/ and nn/: link it first.
LIBPIPE    := $(BUILD)/libpipeline.a
# Command-line options of the programs (tools/, bench/, test tools).
LIBCLI     := $(BUILD)/libcli.a
LIBALL     := $(LIBPIPE) $(LIBIMAGE) $(LIBNN) $(LIBCLI)

PROGS := $(BUILD)/mnist-train $(BUILD)/mnist-eval $(BUILD)/mnist-predict \
         $(BUILD)/mnist-server $(BUILD)/mnist-glyphs \
         $(BUILD)/mnist-outliers $(BUILD)/mnist-strokes
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TEST_TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(wildcard tests/tools/*.c))

# Keep objects that pattern chains would otherwise delete as intermediate.
.SECONDARY:

.PHONY: FORCE all test-bins deps deps-test deps-bench deps-glyphs data glyphs robustness fashion run test unit integration cli \
        browser lint-spec asan coverage train bench profile clean models-check deploy-check rolling \
        kube-play reload-soak reload-tsan \
        deps-fuzz fuzz fuzz-long fuzz-build fuzz-bins tsan soak format format-check
all: $(PROGS)
test-bins: $(UNIT_BINS) $(TEST_TOOLS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIBNN): $(NN_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^
$(LIBIMAGE): $(IMAGE_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^
$(LIBPIPE): $(PIPE_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^
$(LIBCLI): $(CLI_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/mnist-%: $(BUILD)/obj/tools/mnist-%.o $(LIBALL)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/obj/tools/mnist-glyphs.o: CFLAGS += $(FT_CFLAGS)
$(BUILD)/mnist-glyphs: $(BUILD)/obj/tools/mnist-glyphs.o $(LIBALL)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(FT_LIBS) -o $@
$(BUILD)/mnist-server: $(SERVER_OBJ) $(BUILD)/obj/gen/openapi_spec.o \
                       $(BUILD)/obj/gen/web_files.o $(BUILD)/obj/gen/build_info.o $(LIBALL)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
# The server carries openapi.yaml (GET /openapi.yaml works from any cwd).
$(BUILD)/gen/openapi_spec.c: openapi.yaml scripts/embed.sh
	@mkdir -p $(dir $@)
	sh scripts/embed.sh srv_openapi_yaml openapi.yaml > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/gen/openapi_spec.o: $(BUILD)/gen/openapi_spec.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
# ... and the drawing page: every file in web/ (server/web.h).
WEB_FILES := $(sort $(wildcard web/*))
$(BUILD)/gen/web_files.c: $(WEB_FILES) scripts/embed.sh scripts/embed-web.sh
	@mkdir -p $(dir $@)
	sh scripts/embed-web.sh $(WEB_FILES) > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/gen/web_files.o: $(BUILD)/gen/web_files.c server/web.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
# The git commit for mnist_build_info: regenerated on every build, replaced
# (and so recompiled) only when it changed.
$(BUILD)/gen/build_info.c: FORCE
	@mkdir -p $(dir $@)
	@sh scripts/build-info.sh > $@.$$$$.tmp && \
	    if cmp -s $@.$$$$.tmp $@; then rm -f $@.$$$$.tmp; else mv $@.$$$$.tmp $@; fi
$(BUILD)/obj/gen/build_info.o: $(BUILD)/gen/build_info.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
FORCE:
# The server unit tests link the server modules (all but main.c).
SERVER_TESTS := $(BUILD)/tests/test_server $(BUILD)/tests/test_server_edges \
                $(BUILD)/tests/test_registry
$(SERVER_TESTS): $(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(filter-out %/main.o,$(SERVER_OBJ)) \
                 $(BUILD)/obj/gen/build_info.o $(LIBALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(CMOCKA_LIBS) -o $@

# The protocol parser's test links only what the parser uses.
$(BUILD)/tests/test_oip: $(BUILD)/obj/tests/unit/test_oip.o $(BUILD)/obj/server/oip.o \
                         $(BUILD)/obj/server/base64.o $(BUILD)/obj/server/buf.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(CMOCKA_LIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(CMOCKA_LIBS) -o $@

# Small programs the tests use (fixture generators and the like).
$(BUILD)/tests/tools/%: $(BUILD)/obj/tests/tools/%.o $(LIBALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# Benchmark programs (bench/*.c), e.g. build/bench/peak, build/bench/gemm_bench.
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- set-up -------------------------------------------------------------
deps:
	@scripts/deps.sh run
deps-test:
	@scripts/deps.sh test
	@scripts/node-deps.sh
deps-bench:
	@scripts/deps.sh bench
deps-fuzz:
	@scripts/deps.sh fuzz
deps-glyphs:
	@scripts/deps.sh glyphs

data:
	@scripts/fetch-mnist.sh data/mnist

# Printed digits and letters from Debian's font packages (tools/mnist-glyphs.c,
# fonts listed in tools/glyph-fonts.txt), split by font into train and eval:
# data/glyphs/{digits,letters}-{train,eval}-{images-idx3,labels-idx1}-ubyte.
glyphs: deps-glyphs
	@$(MAKE) --no-print-directory $(BUILD)/mnist-glyphs
	@mkdir -p data/glyphs
	@for c in digits letters; do for s in train eval; do \
	    $(BUILD)/mnist-glyphs --chars $$c --set $$s --out data/glyphs || exit 1; done; done

# ---- serving ------------------------------------------------------------
run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/mnist-server --port $(PORT) --models-dir models

# ---- tests --------------------------------------------------------------
test: deps-test
	@$(MAKE) --no-print-directory data
	@$(MAKE) --no-print-directory all test-bins
	@$(MAKE) --no-print-directory format-check unit integration cli browser lint-spec models-check deploy-check

# The unit tests and the model-card check run once per kernel path the CPU
# has (NN_ISA=generic, avx2, avx512), so no path goes untested where it runs.
unit: $(UNIT_BINS) $(BUILD)/mnist-eval
	@scripts/each-kernel.sh $(BUILD)/mnist-eval scripts/run-unit.sh $(UNIT_BINS)

# Every suite runs even when one fails; any failing fails the target.
# RELOAD_SOAK: arguments of reload.sh's reload-under-load run (default: a
# short one; see reload-soak).
RELOAD_SOAK ?=
integration: $(PROGS) $(TEST_TOOLS)
	@rc=0; tests/integration/run.sh $(BUILD) || rc=1; \
	    tests/integration/edges.sh $(BUILD) || rc=1; \
	    tests/integration/reload.sh $(BUILD) $(RELOAD_SOAK) || rc=1; \
	    tests/integration/batch.sh $(BUILD) || rc=1; exit $$rc

# The full reload-under-load run (about a minute with its set-up).
reload-soak: deps-test
	@$(MAKE) --no-print-directory all test-bins
	@tests/integration/reload.sh $(BUILD) --connections 64 --seconds 20 --reloads 50

cli: $(PROGS) $(TEST_TOOLS)
	@rc=0; tests/cli/run.sh $(BUILD) || rc=1; tests/cli/edges.sh $(BUILD) || rc=1; \
	    tests/cli/glyphs.sh $(BUILD) || rc=1; exit $$rc

# The drawing page in Debian's chromium (needs make deps-test once).
browser: $(BUILD)/mnist-server
	@tests/browser/run.sh $(BUILD)

lint-spec:
	@scripts/lint-spec.sh

# Formatting: .clang-format (clang-format 14, Debian 12's). nn/gemm.c is
# left out: its kernels are macros around _Pragma("GCC unroll") loops laid
# out by hand, which clang-format 14 splits apart.
FORMAT_SRC = $(filter-out nn/gemm.c,$(shell find nn image pipeline cli server tools bench tests \
                 -name '*.[ch]' | sort))
format:
	clang-format -i $(FORMAT_SRC)
format-check:
	@clang-format --dry-run --Werror $(FORMAT_SRC) && \
	    echo "format-check: $(words $(FORMAT_SRC)) files follow .clang-format"

# Then once more in bf16 where the CPU has AMX (NN_PRECISION): accuracy to
# the image.
models-check: $(BUILD)/mnist-eval
	@scripts/each-kernel.sh $(BUILD)/mnist-eval tests/models/check.sh $(BUILD)
	@if NN_PRECISION=bf16 $(BUILD)/mnist-eval --list-kernels > /dev/null 2>&1; then \
	    echo "==> NN_PRECISION=bf16 tests/models/check.sh $(BUILD)"; \
	    NN_PRECISION=bf16 tests/models/check.sh $(BUILD) && echo "precision tested: fp32 bf16"; \
	else echo "precision tested: fp32 (no AMX-BF16 here)"; fi

# deploy/ renders with kustomize and validates against the Kubernetes schemas.
deploy-check: $(BUILD)/mnist-server
	@tests/deploy/run.sh $(BUILD)

# Three servers behind HAProxy, wrk for 30 s, each server restarted in turn:
# twice (with the drain, then without), about 75 s.
rolling: deps-test
	@$(MAKE) --no-print-directory data all test-bins
	@tests/rolling/run.sh $(BUILD)

# The rendered Deployment under `podman kube play`, with the image that
# ../shared/docker-check/check.sh built; skipped where podman is missing.
kube-play: $(TEST_TOOLS)
	@tests/kube/play.sh $(BUILD)

# Sanitizer build: separate tree, same tests.
asan: deps-test
	@$(MAKE) --no-print-directory data
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	    RELOAD_SOAK="--connections 16 --seconds 10 --reloads 50 --no-rss-check" \
	    unit integration cli

# The reload suite under ThreadSanitizer is part of make tsan (one build,
# one run); this name stays for whoever runs it.
reload-tsan: tsan

# Coverage build: separate tree, same tests, figures per directory
# (scripts/coverage.sh holds the floors).
coverage: deps-test
	@scripts/deps.sh coverage
	@$(MAKE) --no-print-directory data
	@scripts/coverage.sh
# ---- fuzzing, thread sanitizer, soak ---------------------------------------
# libFuzzer harnesses (tests/fuzz/fuzz_*.c), built with clang in their own
# tree: the libraries and server modules instrumented for coverage, address
# and undefined-behaviour checks. FUZZ_TARGETS picks some (e.g. "png oip").
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_TARGETS ?=
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
FUZZ_BINS     = $(patsubst tests/fuzz/%.c,$(BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))

fuzz-build: deps-fuzz
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=$(FUZZ_CC) OPT=-O1 \
	    SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" fuzz-bins
fuzz-bins: $(FUZZ_BINS)
$(BUILD)/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(filter-out %/main.o,$(SERVER_OBJ)) \
                 $(BUILD)/obj/gen/build_info.o $(LIBALL)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer $^ $(LDLIBS) -o $@
fuzz: fuzz-build
	@scripts/fuzz.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)
fuzz-long:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=600

# ThreadSanitizer build in its own tree: the worker pool's, the registry's readers-during-
# reloads and the batcher's unit tests; the batching integration test
# (batched answers equal unbatched ones, drain); the server under
# concurrent requests, hostile HTTP and a LOAD_SECONDS (20) mixed load
# with dynamic batching on and reloads (tests/load/tsan.sh); then the
# reload suite (SIGHUP, polling, the repository API and a reload-under-
# load run, tests/integration/reload.sh). Any race report fails it (TSan's
# exit code, or its line in a server log).
TSAN_BUILD := build/tsan
tsan: deps-fuzz deps-test
	@$(MAKE) --no-print-directory data
	@$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) OPT=-O1 \
	    SAN="-fsanitize=thread -fno-omit-frame-pointer" \
	    $(TSAN_BUILD)/mnist-server $(TSAN_BUILD)/tests/tools/mkpng \
	    $(TSAN_BUILD)/tests/tools/mkmodel $(TSAN_BUILD)/tests/test_registry \
	    $(TSAN_BUILD)/tests/test_batch $(TSAN_BUILD)/tests/test_pool
	@TSAN_OPTIONS="halt_on_error=1 exitcode=66" $(TSAN_BUILD)/tests/test_registry
	@TSAN_OPTIONS="halt_on_error=1 exitcode=66" $(TSAN_BUILD)/tests/test_batch
	@TSAN_OPTIONS="halt_on_error=1 exitcode=66" $(TSAN_BUILD)/tests/test_pool
	@TSAN_OPTIONS="exitcode=66" CLIENTS=8 ROUNDS=1 tests/integration/batch.sh $(TSAN_BUILD)
	@tests/load/tsan.sh $(TSAN_BUILD)
	@TSAN_OPTIONS="exitcode=66" tests/integration/reload.sh $(TSAN_BUILD) \
	    --connections 16 --seconds 10 --reloads 20 --no-rss-check

# wrk with 64 connections for SOAK_SECONDS; RSS and fds sampled every 10 s
# (tests/load/soak.sh).
SOAK_SECONDS ?= 300
soak: deps-fuzz
	@$(MAKE) --no-print-directory data
	@$(MAKE) --no-print-directory $(BUILD)/mnist-server $(BUILD)/tests/tools/mkpng
	@tests/load/soak.sh $(BUILD) $(SOAK_SECONDS)

# ---- robustness ------------------------------------------------------------
# The model cards' robustness tables: transforms of the test set
# (scripts/robustness.sh), then uploads, printed and pen-drawn digits and the
# out-of-distribution shares (scripts/beyond-mnist.sh), then the default's
# out-of-distribution operating points (scripts/ood-operating-points.sh).
# About 17 minutes on a shared 2-core machine.
ROBUST_MODELS ?= models/mlp.safetensors models/lenet.safetensors models/cnn.safetensors \
                 models/members/cnn-s1.safetensors
BEYOND_MODELS ?= $(ROBUST_MODELS) models/cnn-ensemble.ensemble
robustness: deps-test deps-glyphs
	@$(MAKE) --no-print-directory data glyphs all
	@node scripts/pen-digits.mjs data/glyphs/pen-digits
	@scripts/robustness.sh $(BUILD) $(ROBUST_MODELS)
	@echo
	@scripts/beyond-mnist.sh $(BUILD) models/cnn.safetensors $(BEYOND_MODELS)
	@echo
	@scripts/ood-operating-points.sh $(BUILD) models/cnn.safetensors head

# ---- training and benchmarks ---------------------------------------------
train: deps-test
	@$(MAKE) --no-print-directory data all
	@scripts/train-all.sh $(BUILD) $(MODELS)

bench: deps-bench
	@$(MAKE) --no-print-directory data all
	@bench/run.sh $(BUILD)

# Where a server request's CPU time goes (perf under wrk's load): a table
# per model, LeNet and the default CNN (bench/profile.sh).
profile: deps-bench
	@$(MAKE) --no-print-directory data $(BUILD)/mnist-server $(BUILD)/tests/tools/mkpng
	@bench/profile.sh $(BUILD)

clean:
	rm -rf build
