#!/bin/sh
# Checks the Prometheus and Grafana files with the real tools: promtool (Debian's
# `prometheus` package, `make debs`) validates the scrape config and the rules
# and runs the alerts' unit tests (rules_test.yml); every dashboard must be JSON.
# Called by deploy/check.sh; tests/observability.rs runs the same promtool checks.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
command -v promtool >/dev/null || { echo "promtool is missing: run \`make debs\` (Debian package prometheus)" >&2; exit 1; }
promtool check config prometheus.yml
promtool check rules rules.yml
promtool test rules rules_test.yml
for dashboard in ../grafana/dashboards/*.json; do
    python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$dashboard" || { echo "$dashboard is not JSON" >&2; exit 1; }
done
echo "deploy/prometheus: config, rules, rule tests and dashboards OK"
