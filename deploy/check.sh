#!/usr/bin/env bash
# `make deploy-check`: validates everything under deploy/ and the CI workflow
# with real linters and published schemas, since nothing here runs a Docker
# engine, a Kubernetes cluster or GitHub Actions. Every check runs even after
# one fails; the script exits 1 if any failed, naming each.
#
# The tools come from .venv (the Makefile's deploy-check stamp installs them,
# pinned): hadolint, shellcheck, check-jsonschema, kubectl, kubernetes-validate. The
# compose checks also run the `rally` binary (RALLY_BIN, else a debug build).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

export PATH="$PWD/.venv/bin:$PATH"
failed=()

check() {
    local name=$1
    shift
    echo "== $name"
    if "$@"; then
        echo "ok: $name"
    else
        echo "FAILED: $name"
        failed+=("$name")
    fi
}

# A sub-check another part of deploy/ provides, when it exists.
optional() {
    local script=$1
    if [[ -x $script ]]; then
        check "$script" "$script"
    elif [[ -e $script ]]; then
        check "$script" bash "$script"
    else
        echo "== $script: absent, skipped"
    fi
}

# The stub workspace the image's dependency layer builds from must load with
# the committed Cargo.lock unchanged, or that layer fails (or silently drifts).
dependency_recipe() {
    local recipe
    recipe=$(mktemp -d) || return 1
    sh deploy/docker/recipe.sh "$recipe/w" \
        && cargo metadata --locked --format-version 1 --manifest-path "$recipe/w/Cargo.toml" >/dev/null
    local rc=$?
    rm -rf "$recipe"
    return $rc
}

rally_binary() {
    if [[ -n ${RALLY_BIN:-} ]]; then
        echo "$RALLY_BIN"
        return
    fi
    cargo build --locked --quiet --bin rally >&2 || return 1
    echo "$PWD/target/debug/rally"
}

compose_against_rally() {
    local rally
    rally=$(rally_binary) || return 1
    # With the test PostgreSQL and Redis (the Makefile exports them), the
    # layout also runs as processes here (check.py's --smoke).
    if [[ -n ${RALLY_TEST_DATABASE_URL:-} && -n ${RALLY_TEST_REDIS_URL:-} ]]; then
        python deploy/compose/check.py "$rally" --smoke "$RALLY_TEST_DATABASE_URL" "$RALLY_TEST_REDIS_URL"
    else
        echo "compose: RALLY_TEST_DATABASE_URL or RALLY_TEST_REDIS_URL unset: no smoke run"
        python deploy/compose/check.py "$rally"
    fi
}

check "hadolint deploy/docker/Dockerfile" hadolint deploy/docker/Dockerfile
check "image dependency layer: deploy/docker/recipe.sh" dependency_recipe
check "compose.yaml against the Compose Specification schema" \
    check-jsonschema --schemafile deploy/schemas/compose/compose-spec.json deploy/compose/compose.yaml
check "compose.yaml against rally's flags and keys.sh" compose_against_rally
check "shellcheck of the deploy scripts" shellcheck deploy/check.sh deploy/compose/keys.sh deploy/docker/recipe.sh
check "GitHub workflows against the workflow schema" \
    check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
optional deploy/k8s/check.sh
optional deploy/agones/check.sh
optional deploy/prometheus/check.sh

if ((${#failed[@]})); then
    echo
    echo "deploy-check FAILED (${#failed[@]}):"
    printf '  - %s\n' "${failed[@]}"
    exit 1
fi
echo
echo "deploy-check passed"
