# Thin wrapper over CMake. `make run` and `make test` install missing Debian packages
# first (scripts/deps.sh, a no-op when everything is there).
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
CTEST_ARGS ?= --output-on-failure

.PHONY: all deps build build-asan run test test-plain test-asan bench microbench fuzz format clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DFLOORMTA_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS)

# The daemon on the embedded default configuration (./var, SMTP 127.0.0.1:2525, HTTP
# 127.0.0.1:8025), in the foreground: Ctrl-C (SIGINT) drains and stops it.
run: build
	@$(BUILD)/floormta run

# Every test twice: a normal build, then AddressSanitizer + UBSan. Ends with ctest's
# summary line of the sanitizer run.
test: test-plain test-asan

test-plain: build
	@echo "== tests (RelWithDebInfo) =="
	@cd $(BUILD) && ctest $(CTEST_ARGS) -j $(JOBS)

test-asan: build-asan
	@echo "== tests (ASan + UBSan) =="
	@cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest $(CTEST_ARGS) -j $(JOBS)

# The load scenarios of issue 7 (bench/scenarios.sh: one-domain, many-domains, mixed,
# large, scaling, then bench/compare_postfix.sh when present), each on its own test
# network; then bench/plot.sh prints the table and draws bench/results/*.png. About
# 5.5 minutes on the 2-core development machine, the Postfix comparison included.
# BENCH_ARGS passes options and scenario names, e.g.
# `make bench BENCH_ARGS="--small"` or BENCH_ARGS="--sync-fs mixed".
BENCH_ARGS ?=
bench: build
	@FLOORMTA_BIN=$(abspath $(BUILD)) bash bench/scenarios.sh $(BENCH_ARGS)
	@bash bench/plot.sh

# The Google Benchmark microbenchmarks (TLS handshakes, caches, spool, end-to-end
# delivery in one process): a separate target, several minutes on their own.
microbench: build
	@$(BUILD)/floormta-bench

# Coverage-guided fuzzing of the parsers of untrusted input (tests/fuzz) with clang's
# libFuzzer, FUZZ_SECONDS per target (make test runs the same targets briefly, from a
# fixed seed, without libFuzzer). New inputs go to build-fuzz/corpus/<target>, a crash's
# input to build-fuzz/crash-<target>-*.
FUZZ_SECONDS ?= 60
fuzz:
	@FLOORMTA_DEPS_FUZZ=1 bash scripts/deps.sh
	@CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DFLOORMTA_SANITIZE=ON -DFLOORMTA_LIBFUZZER=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzz_targets
	@bash tests/fuzz/run_libfuzzer.sh build-fuzz $(FUZZ_SECONDS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h' '*.cc')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
