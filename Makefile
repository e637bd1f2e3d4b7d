# make setup : system packages (when root), .venv, pip install -e '.[dev]'
# make demo  : setup + python -m ccfg demo      make test : setup + pytest
# make bench : setup + benchmarks               make asan : tests under ASan/UBSan
PY      := .venv/bin/python
APT_PKGS := build-essential pkg-config libopenblas-dev glslc libvulkan-dev mesa-vulkan-drivers \
            vulkan-validationlayers dataset-fashion-mnist
STAMP   := .venv/.installed

.PHONY: setup build demo test bench asan clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages (run as root or install): $$missing"; exit 1; fi; \
	fi
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# rebuild the extension in place after C changes (serialised: several shells may call it)
build: $(STAMP)
	flock /tmp/ccfg-build.lock $(PY) setup.py -q build_ext --inplace

demo: build
	$(PY) -m ccfg demo

test: build
	$(PY) -m pytest -q tests

bench: build
	$(PY) benchmarks/run.py

# a sanitized copy of the tree in build/asan, so the working tree's extension stays usable
asan: $(STAMP)
	rm -rf build/asan && mkdir -p build/asan
	cp -r setup.py pyproject.toml README.md LICENSE CITATION.cff MANIFEST.in CONTRIBUTING.md csrc shaders ccfg tests tools docs benchmarks notebooks build/asan/ && rm -f build/asan/ccfg/_core*.so
	cd build/asan && CCFG_SANITIZE=1 ../../$(PY) setup.py -q build_ext --inplace
	cd build/asan && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ../../$(PY) -m pytest -q -x tests -p no:cacheprovider

clean:
	rm -rf build ccfg/_core*.so *.egg-info
