# lastcall: two commands on a fresh Debian 12 machine.
#   make run   install what is missing, build, start `lastcall serve` on the embedded default
#   make test  the same set-up, then every test
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
# ccache hits across clones at different paths (CI builds a fresh clone on the same machine).
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

# Debian 12 packages: what building and running need, and what only the tests need. Keep these
# lists the only place they are named.
BUILD_PACKAGES := build-essential cmake ninja-build ccache pkg-config git ca-certificates \
  libboost-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libsqlite3-dev \
  libssl-dev libpq-dev libofx-dev libnats-dev libgtest-dev googletest libbenchmark-dev python3 \
  curl sqlite3 libgoogle-perftools-dev
TEST_PACKAGES := postgresql python3-yaml python3-jsonschema prometheus chromium fonts-dejavu-core \
  nats-server clang-14 libclang-rt-14-dev llvm-14

# Node tools for the contract validators and the dashboard's browser test, pinned by their lock
# files and installed with `npm ci`. Node itself comes from Debian (nodejs, npm) unless the
# machine already has an npm.
NODE_TOOL_DIRS := tools/contracts tests/integration/browser tests/integration/jose tests/integration/s3server

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Sanitizer builds, with clang: build-asan (ASan+UBSan, also instrumented for libFuzzer and holding
# the fuzz targets) and build-tsan (TSan). -O1 and line tables only: quick to compile, exact stack
# traces. libclang-rt-14-dev holds the sanitizer and libFuzzer runtimes for clang 14.
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
SAN_CMAKE = cmake -S . -G Ninja -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_CXX_COMPILER=clang++-14 \
  -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -gline-tables-only" -DLASTCALL_BENCH=OFF
# What runs under each: everything under ASan+UBSan except the browser test (a headless Chromium
# driving the dashboard, slow and not our code). TSan is scoped to the concurrent parts, to keep
# `make test` under 25 minutes: build-tsan builds only the `lastcall` binary and the unit test
# binary (TSAN_TARGETS), runs the unit suites of the bus, the SQLite writer and its checkpointer,
# the coordinator driver's flows, the HTTP server, webhook delivery and retention over the real
# SQLite writer (TSAN_UNIT_FILTER), and
# the integration tests that drive the real server concurrently (TSAN_CTEST_INCLUDE: the
# lifecycle races, retention, and the short crash harness's concurrent clients and kills).
ASAN_CTEST_EXCLUDE ?= integration.test_dashboard
TSAN_TARGETS ?= lastcall lastcall_tests
TSAN_UNIT_FILTER ?= InProcessBusTest.*:GroupCommitWriterTest.*:SqliteDatabaseTest.*:Seeds/ChaosBusTest.*:Sqlite/CoordinationFlowTest.*:HttpServerTest.*:WebhookDeliveryTest.*:VerificationTest.*:FaultyDatabaseTest.*
TSAN_CTEST_INCLUDE ?= ^unit\.lastcall_tests$$|^integration\.test_lifecycle$$|^integration\.test_retention$$|^crash\.short$$
# make fuzz: seconds per target; new inputs that add coverage are merged into tests/fuzz/corpus.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.cc,%,$(wildcard tests/fuzz/fuzz_*.cc))

.PHONY: all deps test-deps node-tools configure build run test unit integration bench clean \
  asan tsan test-main test-asan test-tsan fuzz crash soak

all: build

# Installs only what is missing, so a second run costs one dpkg query.
define install_missing
	@missing=$$(for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	$(2) \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call install_missing,$(BUILD_PACKAGES),)

test-deps: deps
	$(call install_missing,$(TEST_PACKAGES),command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm";)

# Reinstalls a tool folder only when its lock file changed since the last install.
node-tools: test-deps
	@for d in $(NODE_TOOL_DIRS); do \
	  if [ ! -f $$d/node_modules/.package-lock.json ] || [ $$d/package-lock.json -nt $$d/node_modules/.package-lock.json ]; then \
	    echo "npm ci in $$d"; (cd $$d && npm ci --no-audit --no-fund --loglevel=error) || exit 1; \
	  fi; \
	done

$(BUILD_DIR)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	./$(BUILD_DIR)/lastcall serve

# Every test in the normal build, then again under ASan+UBSan (with the fuzz corpora), then the
# concurrent parts under TSan. A sanitizer report fails the test that made it and the final
# sanitizer.no_reports test, which prints the reports (docs/reliability.md, "Sanitizers").
test: test-main test-asan test-tsan

test-main: build node-tools
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

$(ASAN_DIR)/build.ninja: CMakeLists.txt | test-deps
	$(SAN_CMAKE) -B $(ASAN_DIR) -DLASTCALL_SANITIZE=address,undefined -DLASTCALL_FUZZ=ON

$(TSAN_DIR)/build.ninja: CMakeLists.txt Makefile | test-deps
	$(SAN_CMAKE) -B $(TSAN_DIR) -DLASTCALL_SANITIZE=thread '-DLASTCALL_SANITIZE_UNIT_FILTER=$(TSAN_UNIT_FILTER)'

asan: test-deps $(ASAN_DIR)/build.ninja
	cmake --build $(ASAN_DIR) -j $(JOBS)

tsan: test-deps $(TSAN_DIR)/build.ninja
	cmake --build $(TSAN_DIR) -j $(JOBS) --target $(TSAN_TARGETS)

test-asan: asan node-tools
	cd $(ASAN_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900 -E '$(ASAN_CTEST_EXCLUDE)'

test-tsan: tsan node-tools
	cd $(TSAN_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900 -R '$(TSAN_CTEST_INCLUDE)'

# Runs every fuzz target for FUZZ_SECONDS from its corpus, merges the inputs that add coverage
# into tests/fuzz/corpus/<target>/ and prints the executions per target. A crash stops here with
# the input saved as $(ASAN_DIR)/fuzz/<target>-crash-*: fix it, then keep the input in
# tests/fuzz/regressions/<target>/.
fuzz: asan
	@mkdir -p $(ASAN_DIR)/fuzz
	@for t in $(FUZZ_TARGETS); do \
	  rm -rf $(ASAN_DIR)/fuzz/new-$$t && mkdir -p $(ASAN_DIR)/fuzz/new-$$t tests/fuzz/corpus/$$t || exit 1; \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp \
	  ./$(ASAN_DIR)/tests/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(ASAN_DIR)/fuzz/$$t- $(ASAN_DIR)/fuzz/new-$$t tests/fuzz/corpus/$$t \
	    > $(ASAN_DIR)/fuzz/$$t.log 2>&1 || { tail -60 $(ASAN_DIR)/fuzz/$$t.log; exit 1; }; \
	  ./$(ASAN_DIR)/tests/fuzz/fuzz_$$t -merge=1 tests/fuzz/corpus/$$t $(ASAN_DIR)/fuzz/new-$$t \
	    > $(ASAN_DIR)/fuzz/$$t-merge.log 2>&1 || { tail -30 $(ASAN_DIR)/fuzz/$$t-merge.log; exit 1; }; \
	done
	@for t in $(FUZZ_TARGETS); do \
	  printf '%-16s %12s executions, corpus %s files\n' $$t \
	    "$$(sed -n 's/^stat::number_of_executed_units: *//p' $(ASAN_DIR)/fuzz/$$t.log)" \
	    "$$(ls tests/fuzz/corpus/$$t | wc -l)"; \
	done

unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

integration: build node-tools
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L integration

# The long crash harness (docs/reliability.md): more files and kills than the short run in
# `make test`. CRASH_ARGS adds or overrides parameters (`python3 tests/crash/crash_harness.py --help`).
CRASH_ARGS ?=
crash: build
	LASTCALL_BIN=$(abspath $(BUILD_DIR))/lastcall python3 tests/crash/crash_harness.py --users 6 \
	  --files-per-user 100 --kills 150 --workers 4 $(CRASH_ARGS)

# The soak (docs/reliability.md, not part of `make test`): half the measured maximum load for
# SOAK_MINUTES (10 by default); SOAK_ARGS adds parameters (`python3 tests/crash/soak.py --help`).
SOAK_MINUTES ?= 10
SOAK_ARGS ?=
soak: build
	LASTCALL_BIN=$(abspath $(BUILD_DIR))/lastcall python3 tests/crash/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

# The end-to-end benchmark (about 20 minutes with the defaults): rewrites docs/performance.md,
# docs/performance-chart.svg and bench/results/latest.json. `./build/bench/lastcall_bench --help`
# lists the parameters for shorter runs.
bench: build
	./$(BUILD_DIR)/bench/metrics_bench --benchmark_min_time=0.5
	./$(BUILD_DIR)/bench/lastcall_bench --lastcall ./$(BUILD_DIR)/lastcall --out docs/performance.md \
	  --json bench/results/latest.json --svg docs/performance-chart.svg

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR)
