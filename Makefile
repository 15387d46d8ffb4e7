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
  libssl-dev libofx-dev libgtest-dev googletest libbenchmark-dev python3 curl sqlite3
TEST_PACKAGES := python3-yaml python3-jsonschema prometheus chromium fonts-dejavu-core

# Node tools for the contract validators and the dashboard's browser test, pinned by their lock
# files and installed with `npm ci`. Node itself comes from Debian (nodejs, npm) unless the
# machine already has an npm.
NODE_TOOL_DIRS := tools/contracts tests/integration/browser tests/integration/jose

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps test-deps node-tools configure build run test unit integration bench clean

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

test: build node-tools
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

integration: build node-tools
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L integration

# The end-to-end benchmark (about 20 minutes with the defaults): rewrites docs/performance.md,
# docs/performance-chart.svg and bench/results/latest.json. `./build/bench/lastcall_bench --help`
# lists the parameters for shorter runs.
bench: build
	./$(BUILD_DIR)/bench/metrics_bench --benchmark_min_time=0.5
	./$(BUILD_DIR)/bench/lastcall_bench --lastcall ./$(BUILD_DIR)/lastcall --out docs/performance.md \
	  --json bench/results/latest.json --svg docs/performance-chart.svg

clean:
	rm -rf $(BUILD_DIR)
