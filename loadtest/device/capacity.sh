#!/usr/bin/env bash
# Shard capacity on a many-core machine (issue 19): one `rally shard` process
# per core on half the cores, `rally loadtest connect --processes K`
# generators on the other half (one generator per shard, its K child
# processes on K cores of their own), a load sweep over both transports, and
# one report: per load point the generators' JSON reports merged with
# `rally loadtest merge` (JSON + HTML, judged by the capacity criteria), and
# capacity.json / capacity.html over all points.
#
# Usage: loadtest/device/capacity.sh [--dry-run]
#
# Settings (environment):
#   CORES        cores to use, 0..CORES-1 (default: all online cores)
#   SHARDS       shard processes, one per core from core 0 (default: CORES/2, at least 1)
#   DURATION     seconds each point holds its load after the ramp (default 20;
#                not SECONDS, which is bash's own clock)
#   RAMP         clients started per second per shard (default 500)
#   TRANSPORTS   transports to sweep (default "quic udp")
#   QUIC_MATCHES two-player matches per shard at each QUIC point
#   UDP_MATCHES  two-player matches per shard at each raw UDP point
#                (defaults: a capacity sweep on 16 cores or more, a small one below)
#   OUT          where the reports go (default target/capacity-<UTC time>)
#   RALLY        the rally binary (default target/release/rally, built first)
#   SKIP_BUILD   1: do not run cargo build --release --locked
#   GENERATOR_FLAGS  more `rally loadtest connect` flags for every generator
#                (e.g. "--driver sdk", "--endpoints 4"), split at spaces
#   BASE_PORT    first port used (default 17000): shard i listens on BASE_PORT+i
#                (QUIC), BASE_PORT+100+i (raw UDP), BASE_PORT+200+i (metrics)
set -euo pipefail

dry_run=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "capacity.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

online=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
cores=${CORES:-$online}
if ((cores < 1)); then
    cores=1
fi
if ((cores > online)); then
    if ((dry_run)); then
        echo "capacity.sh: CORES=$cores but this machine has $online (planning only)" >&2
    else
        echo "capacity.sh: CORES=$cores but this machine has $online; using $online" >&2
        cores=$online
    fi
fi
shards=${SHARDS:-$((cores / 2))}
if ((shards < 1)); then
    shards=1
fi
if ((shards > cores)); then
    shards=$cores
fi
gen_cores=$((cores - shards))
# Generator processes per shard, each on a core of its own.
if ((gen_cores >= shards)); then
    per_shard=$((gen_cores / shards))
else
    per_shard=1
fi
duration=${DURATION:-20}
ramp=${RAMP:-500}
transports=${TRANSPORTS:-quic udp}
if ((cores >= 16)); then
    quic_matches=${QUIC_MATCHES:-250 500 750 1000 1250}
    udp_matches=${UDP_MATCHES:-1000 2000 3000 4000 5000}
else
    quic_matches=${QUIC_MATCHES:-10 50}
    udp_matches=${UDP_MATCHES:-10 50}
fi
out=${OUT:-target/capacity-$(date -u +%Y%m%dT%H%M%SZ)}
rally=${RALLY:-target/release/rally}
base_port=${BASE_PORT:-17000}
read -r -a generator_flags <<<"${GENERATOR_FLAGS:-}"
thresholds=(
    --threshold 'errors==0'
    --threshold 'snapshot_loss==0'
    --threshold 'late_ticks==0'
    --threshold 'shard_dropped==0'
    --threshold 'ticks_within_budget>=99%'
)

# The cores of shard i's generator: a slice of its own of the cores after the
# shards, or (fewer generator cores than shards) one shared round robin; on a
# single core everything shares core 0.
generator_cores() {
    local shard=$1
    if ((gen_cores == 0)); then
        echo 0
    elif ((gen_cores >= shards)); then
        local first=$((shards + shard * per_shard))
        if ((per_shard == 1)); then
            echo "$first"
        else
            echo "$first-$((first + per_shard - 1))"
        fi
    else
        echo $((shards + shard % gen_cores))
    fi
}

shard_core() {
    echo "$1"
}

matches_for() {
    case "$1" in
        quic) echo "$quic_matches" ;;
        udp) echo "$udp_matches" ;;
        *)
            echo "capacity.sh: unknown transport $1 (quic or udp)" >&2
            exit 2
            ;;
    esac
}

plan() {
    echo "capacity plan: $cores cores, $shards shard process(es), $gen_cores generator core(s), $per_shard generator process(es) per shard"
    echo "  build: $([[ ${SKIP_BUILD:-0} == 1 ]] && echo skipped || echo 'cargo build --release --locked')"
    echo "  binary: $rally; reports: $out"
    local shard
    for ((shard = 0; shard < shards; shard++)); do
        echo "  shard $shard: core $(shard_core "$shard"), QUIC 127.0.0.1:$((base_port + shard)), raw UDP 127.0.0.1:$((base_port + 100 + shard)), metrics 127.0.0.1:$((base_port + 200 + shard)); generator on cores $(generator_cores "$shard") (--processes $per_shard)"
    done
    local transport
    for transport in $transports; do
        echo "  $transport: matches per shard $(matches_for "$transport") (x$shards shards), ramp $ramp clients/s per shard, hold ${duration}s"
    done
    echo "  generator flags: ${generator_flags[*]:-none}"
    echo "  judged by: ${thresholds[*]}"
}

plan
if ((dry_run)); then
    exit 0
fi

for tool in taskset openssl od; do
    if ! command -v "$tool" >/dev/null; then
        echo "capacity.sh: needs $tool" >&2
        exit 1
    fi
done
# Raw UDP clients of the SDK driver hold a socket each: raise the open-file
# limit to the hard limit (best effort; the swarm and QUIC need few).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --locked -p rally
fi
if [[ ! -x $rally ]]; then
    echo "capacity.sh: no rally binary at $rally (build it, or set RALLY)" >&2
    exit 1
fi
mkdir -p "$out"

# One issuer key for every shard: the generators sign with its seed (they read
# RALLY_LOADTEST_TOKEN_KEY), the shards trust its public half.
key_der="$out/issuer.der"
openssl genpkey -algorithm ed25519 -outform DER -out "$key_der"
seed_hex=$(od -An -tx1 -v "$key_der" | tr -d ' \n' | tail -c 64)
public_hex=$(openssl pkey -inform DER -in "$key_der" -pubout -outform DER | od -An -tx1 -v | tr -d ' \n' | tail -c 64)
rm -f "$key_der"
export RALLY_LOADTEST_TOKEN_KEY="1:$seed_hex"

shard_pids=()
generator_pids=()

stop_pids() {
    local pid
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    stop_pids "${generator_pids[@]}" "${shard_pids[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the shards for one point and waits for each one's ready line.
start_shards() {
    local dir=$1 shard
    shard_pids=()
    for ((shard = 0; shard < shards; shard++)); do
        mkdir -p "$dir/shard-$shard"
        taskset -c "$(shard_core "$shard")" "$rally" --log-level warn shard \
            --listen "127.0.0.1:$((base_port + shard))" \
            --udp-addr "127.0.0.1:$((base_port + 100 + shard))" \
            --metrics-addr "127.0.0.1:$((base_port + 200 + shard))" \
            --name "shard-$shard" \
            --data-dir "$dir/shard-$shard" \
            --token-key "1:$public_hex" \
            --max-matches 20000 \
            --drain-timeout 1 \
            --ready-json \
            >"$dir/shard-$shard/ready.jsonl" 2>"$dir/shard-$shard/stderr.log" &
        shard_pids+=("$!")
    done
    for ((shard = 0; shard < shards; shard++)); do
        local ready="$dir/shard-$shard/ready.jsonl" waited=0
        until grep -q '"event":"ready"' "$ready" 2>/dev/null; do
            if ! kill -0 "${shard_pids[$shard]}" 2>/dev/null || ((waited > 300)); then
                echo "capacity.sh: shard $shard did not start; its log:" >&2
                tail -n 20 "$dir/shard-$shard/stderr.log" >&2
                return 1
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
    done
}

fingerprint_of() {
    grep -o '"fingerprint":"[0-9a-f]*"' "$1/shard-$2/ready.jsonl" | head -n 1 | cut -d '"' -f 4
}

# One load point: fresh shards, one generator per shard, the merged report.
run_point() {
    local transport=$1 matches=$2
    local dir="$out/$transport-$matches"
    local clients=$((2 * matches)) shard failed=0
    mkdir -p "$dir"
    start_shards "$dir"
    generator_pids=()
    local reports=()
    for ((shard = 0; shard < shards; shard++)); do
        local fingerprint
        fingerprint=$(fingerprint_of "$dir" "$shard")
        reports+=("$dir/generator-$shard.json")
        taskset -c "$(generator_cores "$shard")" "$rally" --log-level warn loadtest connect \
            --processes "$per_shard" \
            --transport "$transport" \
            --shard "127.0.0.1:$((base_port + shard))" \
            --shard-udp "127.0.0.1:$((base_port + 100 + shard))" \
            --shard-metrics "127.0.0.1:$((base_port + 200 + shard))" \
            --shard-name "shard-$shard" \
            --shard-pid "${shard_pids[$shard]}" \
            --fingerprint "$fingerprint" \
            --clients "$clients" \
            --ramp "$ramp" \
            --duration "${duration}s" \
            --seed "$((1000 * shard + 1))" \
            --json "$dir/generator-$shard.json" \
            "${generator_flags[@]}" \
            >"$dir/generator-$shard.txt" 2>"$dir/generator-$shard.log" &
        generator_pids+=("$!")
    done
    for ((shard = 0; shard < shards; shard++)); do
        if ! wait "${generator_pids[$shard]}"; then
            echo "capacity.sh: the generator of shard $shard failed; its log:" >&2
            tail -n 20 "$dir/generator-$shard.log" >&2
            failed=1
        fi
    done
    generator_pids=()
    stop_pids "${shard_pids[@]}"
    shard_pids=()
    if ((failed)); then
        return 1
    fi
    local verdict=pass
    if ! "$rally" --log-level warn loadtest merge "${reports[@]}" "${thresholds[@]}" \
        --json "$dir/merged.json" --html "$dir/merged.html" >"$dir/merged.txt"; then
        if [[ ! -s $dir/merged.json ]]; then
            echo "capacity.sh: merging the reports of $dir failed" >&2
            return 1
        fi
        verdict=fail
    fi
    echo "$transport $matches $verdict" >>"$out/points.txt"
    echo "== $transport, $matches matches per shard x $shards: $verdict"
    cat "$dir/merged.txt"
}

: >"$out/points.txt"
for transport in $transports; do
    for matches in $(matches_for "$transport"); do
        run_point "$transport" "$matches"
    done
done

# The summary over all points: capacity.json (needs jq for the figures) and
# capacity.html linking every point's merged report.
summary_json="$out/capacity.json"
summary_html="$out/capacity.html"
{
    echo '<!doctype html><meta charset="utf-8"><title>rally capacity</title>'
    echo "<h1>rally shard capacity: $shards shard(s), $gen_cores generator core(s), ${duration}s per point</h1>"
    echo '<table border="1" cellpadding="4"><tr><th>transport</th><th>matches per shard</th><th>matches in all</th><th>verdict</th><th>tick p99 (worst shard), ms</th><th>shard CPU (max), %</th><th>generator CPU (sum), %</th><th>report</th></tr>'
} >"$summary_html"
if command -v jq >/dev/null; then
    points=()
    while read -r transport matches verdict; do
        points+=("$(jq -c --arg transport "$transport" --argjson matches "$matches" --argjson shards "$shards" \
            --arg verdict "$verdict" --arg report "$transport-$matches/merged.html" '{
                transport: $transport, matches_per_shard: $matches, shards: $shards,
                matches: ($matches * $shards), verdict: $verdict, report: $report,
                tick_p99_ms: ([.shards[].tick_p99_ms // empty] | max),
                shard_cpu_pct_max: ([.shards[].cpu_pct // empty] | max),
                generator_cpu_pct: ([.runs[].harness_cpu_pct // empty] | add),
                errors: ([.measures.errors[]?] | add // 0),
                thresholds_failed: [.thresholds[] | select(.passed | not) | .threshold.expression]
            }' "$out/$transport-$matches/merged.json")")
        jq -r '"<tr><td>\(.transport)</td><td>\(.matches_per_shard)</td><td>\(.matches)</td><td>\(.verdict)</td><td>\(.tick_p99_ms // "-")</td><td>\(.shard_cpu_pct_max // "-")</td><td>\(.generator_cpu_pct // "-")</td><td><a href=\"\(.report)\">\(.report)</a></td></tr>"' \
            <<<"${points[-1]}" >>"$summary_html"
    done <"$out/points.txt"
    printf '%s\n' "${points[@]}" | jq -s --argjson cores "$cores" --argjson shards "$shards" \
        --argjson generator_cores "$gen_cores" --argjson duration_s "$duration" \
        '{cores: $cores, shards: $shards, generator_cores: $generator_cores, duration_s: $duration_s, points: .}' \
        >"$summary_json"
else
    echo "capacity.sh: no jq: capacity.json lists verdicts only" >&2
    while read -r transport matches verdict; do
        echo "<tr><td>$transport</td><td>$matches</td><td>$((matches * shards))</td><td>$verdict</td><td>-</td><td>-</td><td>-</td><td><a href=\"$transport-$matches/merged.html\">$transport-$matches/merged.html</a></td></tr>" >>"$summary_html"
    done <"$out/points.txt"
    {
        echo "{\"cores\": $cores, \"shards\": $shards, \"generator_cores\": $gen_cores, \"duration_s\": $duration, \"points\": ["
        sep=""
        while read -r transport matches verdict; do
            echo "$sep{\"transport\": \"$transport\", \"matches_per_shard\": $matches, \"verdict\": \"$verdict\", \"report\": \"$transport-$matches/merged.html\"}"
            sep=","
        done <"$out/points.txt"
        echo "]}"
    } >"$summary_json"
fi
echo '</table>' >>"$summary_html"
echo "capacity report: $summary_json, $summary_html"
