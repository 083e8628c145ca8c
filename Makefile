# The two commands of the README's quick start, plus helpers. Each target
# installs what it needs (Rust crates via cargo; later, Python packages into .venv).

CARGO ?= cargo

# The suites that claim PostgreSQL and Redis use the servers every machine of
# this kind runs; point these elsewhere to test against other servers.
RALLY_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
RALLY_TEST_REDIS_URL ?= redis://127.0.0.1:6379
export RALLY_TEST_DATABASE_URL RALLY_TEST_REDIS_URL

.PHONY: run test bench fmt lint

## The main job: the headless simulation demo (scripted players, many matches in one world).
run:
	$(CARGO) run --release --locked -- sim --matches 10000 --seconds 10

## Every test of the workspace.
test:
	$(CARGO) test --workspace --locked

## Criterion benchmarks (release build).
bench:
	$(CARGO) bench --workspace --locked

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
