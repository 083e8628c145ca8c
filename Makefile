# The two commands of the README's quick start, plus helpers. Each target
# installs what it needs (Rust crates via cargo; later, Python packages into .venv).

CARGO ?= cargo

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
