, := ,
# Thin wrapper around CMake. Every target that builds runs `deps` first, so `make run` and
# `make test` work on a fresh Debian 12 machine from a clean clone.

# The one list of Debian packages the project needs, in two parts:
# DEBIAN_BUILD_PACKAGES - what `make build` needs: the libraries, the binary, the examples
#   (`make deps-build`, which the Dockerfile's build stage runs: no browser, Go, nginx or
#   HAProxy in the image);
# DEBIAN_PACKAGES       - that plus what the tests, benchmarks, load tests and fuzzing need
#   (`make deps`, which every other target runs).
# A library the core or an example links against goes in the first list; a library or tool
# that only a test, benchmark or load test uses goes in the second.
DEBIAN_BUILD_PACKAGES := build-essential cmake pkg-config libboost-context-dev libspdlog-dev \
                         node-llhttp libtomlplusplus-dev libcli11-dev nlohmann-json3-dev \
                         zlib1g-dev libssl-dev openssl libnghttp2-dev
DEBIAN_PACKAGES := $(DEBIAN_BUILD_PACKAGES) \
                   libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev wrk curl \
                   clang-format-14 clang-tidy-14 \
                   python3 golang-go nginx-light haproxy gnuplot-nox chromium \
                   nghttp2-client python3-h2

JOBS    ?= $(shell nproc)
BUILD   ?= build
CMAKE   ?= cmake
CTEST_FLAGS ?= --output-on-failure --timeout 600

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps deps-build deps-podman binary image image-test build run install test test-release \
        test-asan test-tsan test-clang bench loadtest clean format lint fuzz soak cert

all: build

# $(1): the packages; installs those not installed yet (apt only when something is missing).
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make $@: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make $@: all Debian packages present"; fi
endef

deps:
	$(call apt_install,$(DEBIAN_PACKAGES))

deps-build:
	$(call apt_install,$(DEBIAN_BUILD_PACKAGES))

# $(1) build dir, $(2) extra cmake flags
define cmake_build
	$(CMAKE) -S . -B $(1) -DCMAKE_BUILD_TYPE=Release $(2) >/dev/null
	$(CMAKE) --build $(1) -j $(JOBS)
endef

build: deps
	$(call cmake_build,$(BUILD),)

# The server binary alone, as the image's build stage makes it: only DEBIAN_BUILD_PACKAGES, no
# tests, benchmarks or examples, in its own tree ($(BUILD)-binary) so that these options never
# leak into the cache of the full build.
BINARY_CMAKE_FLAGS := -DGREEN_BUILD_TESTS=OFF -DGREEN_BUILD_BENCH=OFF -DGREEN_BUILD_EXAMPLES=OFF
binary: deps-build
	$(CMAKE) -S . -B $(BUILD)-binary -DCMAKE_BUILD_TYPE=Release $(BINARY_CMAKE_FLAGS) >/dev/null
	$(CMAKE) --build $(BUILD)-binary -j $(JOBS) --target greenhttp

# The container image (Dockerfile) with docker where its daemon answers, else podman, which
# `make deps-podman` installs; where no registry is reachable the Debian base images are made
# with debootstrap, once (deploy/build-image.sh). `make image-test` starts the image and checks
# it (deploy/image_test.py): as a container where the machine allows it, else under chroot.
IMAGE ?= greenhttp:latest
DEBIAN_IMAGE_PACKAGES := podman runc debootstrap python3
deps-podman:
	$(call apt_install,$(DEBIAN_IMAGE_PACKAGES))

image:
	@docker info >/dev/null 2>&1 || $(MAKE) --no-print-directory deps-podman
	deploy/build-image.sh $(IMAGE)

image-test: image
	python3 deploy/image_test.py $(IMAGE)
	@# The chroot fallback as well (it needs root), so that it cannot rot where containers run.
	@if [ "$$(id -u)" = 0 ]; then set -x; python3 deploy/image_test.py --mode chroot $(IMAGE); fi

# RUN_ARGS: flags for the binary, e.g. HTTPS (and with it HTTP/2 by ALPN):
#   make cert && make run RUN_ARGS="--listen-tls 127.0.0.1:8443 --tls-cert build/tls/server.pem --tls-key build/tls/server.key"
RUN_ARGS ?=
run: build
	@echo "HTTP/2: curl --http2-prior-knowledge http://localhost:8080/plaintext (h2c); HTTPS and h2 by ALPN: make cert && make run RUN_ARGS=\"--listen-tls 127.0.0.1:8443 --tls-cert $(BUILD)/tls/server.pem --tls-key $(BUILD)/tls/server.key\", then curl --cacert $(BUILD)/tls/ca.pem https://localhost:8443/plaintext"
	./$(BUILD)/greenhttp $(RUN_ARGS)

# A throwaway CA and a server certificate for localhost in $(BUILD)/tls (config/tls/make-cert.sh;
# ca.pem is what a client trusts), made once: delete $(BUILD)/tls for a new one.
cert:
	@if [ -f $(BUILD)/tls/server.pem ]; then echo "make cert: $(BUILD)/tls/server.pem exists"; \
	else config/tls/make-cert.sh $(BUILD)/tls && echo "make cert: $(BUILD)/tls/server.pem, server.key, ca.pem"; fi

# Headers, libgreenrt.a + libgreenhttp.a, the CMake package (find_package(greenhttp)), the
# pkg-config file and the binary, under PREFIX (cmake/install.cmake).
PREFIX ?= /usr/local
install: build
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

# The clang lock analysis is in `make lint` (.clang-tidy's clang-diagnostic-*); `make test-clang`
# builds the same with clang, for when a change needs the link as well.
test: deps lint test-release test-asan test-tsan
	@echo "make test: lint (with the clang lock analysis), Release, ASan+UBSan and TSan suites passed"

# CI builds turn the project's own warnings into errors (GREEN_WERROR; third-party code is
# compiled with -w or as SYSTEM headers).
test-release:
	$(call cmake_build,$(BUILD),-DGREEN_WERROR=ON)
	cd $(BUILD) && ctest $(CTEST_FLAGS)

test-asan:
	$(call cmake_build,$(BUILD)-asan,-DGREEN_SANITIZE=address$(,)undefined -DGREEN_BUILD_BENCH=OFF -DGREEN_WERROR=ON)
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ctest $(CTEST_FLAGS)

# atexit_sleep_ms=0: TSan otherwise sleeps 1 s in every process's exit (to catch races with
# threads still running then; ours are joined by green::run) and the suite runs ~400 processes:
# the TSan tests took 445 s with the sleep, about 6 minutes less without it.
test-tsan:
	$(call cmake_build,$(BUILD)-tsan,-DGREEN_SANITIZE=thread -DGREEN_BUILD_BENCH=OFF -DGREEN_WERROR=ON)
	cd $(BUILD)-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:atexit_sleep_ms=0 ctest $(CTEST_FLAGS)

# Clang's thread-safety analysis of the lock annotations (include/green/detail/
# thread_annotations.h) with -Werror: Debian's clang 14 builds the runtime and server libraries
# (with -Wthread-safety) and the binary, in their own tree; no tests. `make lint` makes the same
# analysis without the build (clang-tidy reports Clang's warnings, .clang-tidy), so `make test`
# no longer runs this; it is here for the link. ccache only where it is installed (a fresh
# Debian machine has none).
CCACHE := $(shell command -v ccache)
CLANG_CMAKE_FLAGS := $(BINARY_CMAKE_FLAGS) -DGREEN_WERROR=ON -DGREEN_THREAD_SAFETY=ON \
  $(if $(CCACHE),-DCMAKE_CXX_COMPILER_LAUNCHER=$(CCACHE) -DCMAKE_C_COMPILER_LAUNCHER=$(CCACHE))
test-clang:
	CC=clang CXX=clang++ $(CMAKE) -S . -B $(BUILD)-clang -DCMAKE_BUILD_TYPE=Release $(CLANG_CMAKE_FLAGS) >/dev/null
	$(CMAKE) --build $(BUILD)-clang -j $(JOBS) --target greenrt greenhttp_server greenhttp

# greenrt's microbenchmarks, then the same shapes in Go (Debian's golang-go), one after the
# other on the same cores. BENCH_ARGS, e.g. "-n 200000 -parked 100000", shortens a run.
BENCH_ARGS ?=
bench: build
	@echo "== greenrt ($(BUILD)/bench/runtime_bench $(BENCH_ARGS))"
	@./$(BUILD)/bench/runtime_bench $(BENCH_ARGS)
	@cd loadtest/peers/go-micro && go build -o $(CURDIR)/$(BUILD)/gomicro .
	@echo "== Go $$(go env GOVERSION) (GOMAXPROCS=$${GREEN_MAXPROCS:-$$(nproc)})"
	@GOMAXPROCS=$${GREEN_MAXPROCS:-$$(nproc)} ./$(BUILD)/gomicro $(BENCH_ARGS)

# greenhttp, Go net/http and nginx under the same wrk load, interleaved; writes
# loadtest/results/<date>-<host>.md and charts. LOADTEST_QUICK=1: under 5 minutes. Settings:
# loadtest/compare.py's docstring.
loadtest: build
	@BUILD=$(BUILD) python3 loadtest/compare.py

# libFuzzer, built with Debian's clang under ASan+UBSan in build-fuzz: request_fuzz (the parser,
# tests/http/fuzz/request_fuzz.cpp), then connection_fuzz (a real Connection in a running
# runtime over a socketpair, with read splits: tests/http/fuzz/connection_fuzz.cpp), then
# response_fuzz (the HTTP client against a hostile upstream: tests/http/fuzz/response_fuzz.cpp,
# with its own corpus, response_corpus/, and dictionary, response.dict), each for FUZZ_TIME
# seconds from the committed corpus. A crash leaves build-fuzz/<target>-crash-* (the other
# targets still run; make fails at the end); each run's grown corpus stays in
# build-fuzz/corpus-<target>. The two targets that run a green runtime check leaks once, at
# exit, after the runtime has stopped (LeakSanitizer's own check; -detect_leaks=0 turns off only
# libFuzzer's check after each input): LeakSanitizer does not scan green thread stacks, so what
# a parked green thread holds (the access log's buffer, the main green thread's locals) would
# read as a leak of whichever input was running when it was allocated. The connection target
# serves HTTP/2 too: its h2-* seeds are written by tests/http/fuzz/make_h2_corpus.py.
FUZZ_TIME ?= 60
FUZZ_TARGETS := request_fuzz connection_fuzz response_fuzz
fuzz: deps
	CC=clang CXX=clang++ $(CMAKE) -S . -B $(BUILD)-fuzz -DCMAKE_BUILD_TYPE=Release -DGREEN_BUILD_FUZZ=ON \
	  -DGREEN_SANITIZE=address$(,)undefined -DGREEN_BUILD_BENCH=OFF >/dev/null
	$(CMAKE) --build $(BUILD)-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)
	failed=""; for t in $(FUZZ_TARGETS); do \
	  seeds=corpus; dict=http.dict; \
	  if [ $$t = response_fuzz ]; then seeds=response_corpus; dict=response.dict; fi; \
	  mkdir -p $(BUILD)-fuzz/corpus-$$t && cp tests/http/fuzz/$$seeds/* $(BUILD)-fuzz/corpus-$$t/; \
	  echo "== $$t for $(FUZZ_TIME) s"; \
	  leaks=""; [ $$t = request_fuzz ] || leaks=-detect_leaks=0; \
	  ./$(BUILD)-fuzz/tests/http/$$t $$leaks -max_total_time=$(FUZZ_TIME) -max_len=65536 -timeout=30 \
	    -dict=tests/http/fuzz/$$dict -artifact_prefix=$(BUILD)-fuzz/$$t- \
	    $(BUILD)-fuzz/corpus-$$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "make fuzz: crashes in$$failed (inputs: $(BUILD)-fuzz/*-crash-*)"; exit 1; fi

# The chaos soak (tests/soak/soak.py) against the Release binary for SOAK_SECONDS; SOAK_ARGS
# adds flags, e.g. SOAK_ARGS=--no-sighup or "--binary build-asan/greenhttp --rss-return-mib 0".
SOAK_SECONDS ?= 300
SOAK_ARGS ?=
soak: build
	python3 tests/soak/soak.py --binary $(BUILD)/greenhttp --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# `make format` rewrites every tracked C++ file to .clang-format. Both targets name clang-format
# 14 (Debian 12's): another version formats some constructs differently.
CLANG_FORMAT   ?= clang-format-14
RUN_CLANG_TIDY ?= run-clang-tidy-14
format:
	$(CLANG_FORMAT) -i $$(git ls-files '*.cpp' '*.h')

# `make lint`, the first step of `make test` (about 3 minutes on 2 cores): fails on format drift
# (any file `make format` would change), then on any finding of .clang-tidy's checks
# (bugprone-*, performance-*, concurrency-*, and Clang's own warnings with the lock analysis:
# clang-diagnostic-*; findings are errors) in the project's own .cpp
# files and the headers they include. clang-tidy reads the compile commands of a clang tree,
# $(BUILD)-lint, which is configured, never built. Silence a finding the check gets wrong with
# `// NOLINT(check): why` on its line.
LINT_SOURCES := '^$(CURDIR)/(runtime|server|handlers|config|examples)/.*\.cpp$$'
lint: deps
	$(CLANG_FORMAT) --dry-run --Werror $$(git ls-files '*.cpp' '*.h')
	CC=clang CXX=clang++ $(CMAKE) -S . -B $(BUILD)-lint -DCMAKE_BUILD_TYPE=Release \
	  -DGREEN_BUILD_BENCH=OFF >/dev/null
	@echo "$(RUN_CLANG_TIDY) -p $(BUILD)-lint -j $(JOBS) -quiet $(LINT_SOURCES)"
	@$(RUN_CLANG_TIDY) -p $(BUILD)-lint -j $(JOBS) -quiet $(LINT_SOURCES) >$(BUILD)-lint/tidy.log 2>&1 || \
	  { grep -v '^clang-tidy\|warnings generated' $(BUILD)-lint/tidy.log; echo "make lint: clang-tidy findings above"; exit 1; }
	@echo "make lint: format and clang-tidy clean"

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-fuzz $(BUILD)-binary $(BUILD)-clang $(BUILD)-lint
