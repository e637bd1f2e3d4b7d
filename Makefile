# make setup : system packages (when root), .venv, pip install -e '.[dev]'
# make demo  : setup + python -m ccfg demo      make test : setup + pytest
# make bench : setup + benchmarks               make asan : tests under ASan/UBSan
# make fuzz  : libFuzzer targets (fuzz/) over their corpus, FUZZ_SECONDS in all (default 60)
# make test-coop : the cooperative-matrix tests on lavapipe 26 (Debian 13's, unpacked into
#                  build/toolchain by tools/debian_toolchain.py; this machine's lavapipe has none)
PY      := .venv/bin/python
APT_PKGS := build-essential pkg-config libopenblas-dev glslc libvulkan-dev mesa-vulkan-drivers \
            vulkan-validationlayers dataset-fashion-mnist
# make fuzz only: clang and its compiler-rt (libFuzzer, ASan, UBSan runtimes)
FUZZ_APT_PKGS := clang libclang-rt-dev
STAMP   := .venv/.installed

.PHONY: setup build demo test test-coop toolchain bench asan fuzz fuzz-build fuzz-merge clean

# missing Debian packages of the list $(1): installed with apt-get when root, else named
define apt_install
@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages (run as root or install): $$missing"; exit 1; fi; \
	fi
endef

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(call apt_install,$(APT_PKGS))
	$(MAKE) --no-print-directory toolchain
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# rebuild the extension in place after C changes (serialised: several shells may call it)
build: $(STAMP) toolchain
	flock /tmp/ccfg-build.lock $(PY) setup.py -q build_ext --inplace

# Debian 12's glslc cannot compile GL_KHR_cooperative_matrix: Debian 13's, unpacked into
# build/toolchain (setup.py then compiles the coop shaders with it). Without it (no network, not
# amd64) ccfg builds without the cooperative-matrix convolution and says so.
toolchain:
	@python3 tools/debian_toolchain.py glslc >/dev/null || \
	  echo "ccfg: no glslc for GL_KHR_cooperative_matrix; the coop convolution is left out"

demo: build
	$(PY) -m ccfg demo

test: build
	$(PY) -m pytest -q tests

# the tests that need VK_KHR_cooperative_matrix, on Debian 13's lavapipe (8x8x8 float16 shapes,
# subgroups of 8) started through Debian 13's loader; they skip on this machine's lavapipe. The
# autotuner's and the float32 tiles' tests run there too: a second compiler (LLVM 19) for the
# variants' bit equality, and the tuner on real coop tiles
COOP_TESTS ?= tests/test_vulkan_half.py tests/test_vulkan_coop*.py tests/test_vulkan_tune.py \
              tests/test_vulkan_conv_tiles.py
test-coop: build
	@if python3 tools/debian_toolchain.py lavapipe >/dev/null; then \
	  build/toolchain/lavapipe-run $(PY) -m pytest -q $(wildcard $(COOP_TESTS)); \
	else echo "test-coop skipped: Debian 13's lavapipe could not be fetched"; fi

bench: build
	$(PY) benchmarks/run.py

# a sanitized copy of the tree in build/asan, so the working tree's extension stays usable
asan: $(STAMP)
	rm -rf build/asan && mkdir -p build/asan
	cp -r setup.py pyproject.toml README.md SECURITY.md LICENSE CITATION.cff MANIFEST.in CONTRIBUTING.md csrc shaders ccfg tests tools docs benchmarks notebooks build/asan/ && rm -f build/asan/ccfg/_core*.so
	cd build/asan && CCFG_GLSLC_COOP=$(CURDIR)/build/toolchain/glslc CCFG_SANITIZE=1 ../../$(PY) setup.py -q build_ext --inplace
	cd build/asan && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ../../$(PY) -m pytest -q -x tests -p no:cacheprovider

# libFuzzer targets (fuzz/*_fuzz.c) linked against the C core directly (no Python), with ASan and
# UBSan; the core's objects are built once into build/fuzz. See fuzz/README.md.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst fuzz/%_fuzz.c,%,$(wildcard fuzz/*_fuzz.c))
FUZZ_DIR := build/fuzz
FUZZ_CC ?= clang
FUZZ_CFLAGS := -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined -Wall -Wextra -Wno-unknown-pragmas -D_GNU_SOURCE \
               '-DCCFG_NO_VULKAN="not in the fuzz build"' -Icsrc -Ifuzz/include -Ifuzz \
               $(shell pkg-config --cflags openblas 2>/dev/null)
FUZZ_LIBS := $(or $(shell pkg-config --libs openblas 2>/dev/null),-lopenblas) -lm -ldl
FUZZ_CORE := $(sort $(wildcard csrc/*.c csrc/rules/*.c))
FUZZ_OBJS := $(FUZZ_CORE:%.c=$(FUZZ_DIR)/%.o)
FUZZ_HEADERS := $(wildcard csrc/*.h csrc/rules/*.h fuzz/*.h fuzz/include/*.h)

$(FUZZ_DIR)/.packages: Makefile
	$(call apt_install,$(FUZZ_APT_PKGS) libopenblas-dev pkg-config)
	@mkdir -p $(FUZZ_DIR) && touch $@

$(FUZZ_DIR)/%.o: %.c $(FUZZ_HEADERS) $(FUZZ_DIR)/.packages
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/%_fuzz: fuzz/%_fuzz.c $(FUZZ_OBJS) $(FUZZ_HEADERS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJS) $(FUZZ_LIBS) -o $@

.SECONDARY: $(FUZZ_OBJS)

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%_fuzz)

# every target over its corpus (fuzz/corpus/TARGET, read only), FUZZ_SECONDS split between them;
# new inputs go to build/fuzz/new/TARGET, a crash to build/fuzz/artifacts/ (and fails the run)
fuzz: fuzz-build
	fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# fold what runs found (build/fuzz/new/TARGET) into the kept corpus, minimised by coverage
fuzz-merge: fuzz-build
	fuzz/run.sh --merge $(FUZZ_DIR) 0 $(FUZZ_TARGETS)

clean:
	rm -rf build ccfg/_core*.so *.egg-info
