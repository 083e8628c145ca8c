#!/usr/bin/env python3
"""Checks the rendered Agones objects against what `rally shard --agones` expects.

Usage: contract.py RENDERED_YAML...

The schemas say the objects are well formed; this says they fit rally (issue #16's
shared names): ports `quic` (7102/UDP) and `udp` (7103/UDP) with portPolicy Dynamic,
health periodSeconds 5 / failureThreshold 3 / initialDelaySeconds 10, a Counter `matches`
whose capacity equals the shard's --max-matches, --agones set, a termination grace period
longer than --drain-timeout, a FleetAutoscaler on Counter `matches` of an existing Fleet
(minCapacity >= bufferSize, maxCapacity >= minCapacity), and GameServerAllocation
selectors that name that Fleet and ask for a free `matches` slot, Allocated before Ready.
"""

import sys

import yaml


def flag(args, name):
    for arg in args:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(paths):
    objects = [o for p in paths for o in yaml.safe_load_all(open(p, encoding="utf-8")) if o]
    problems = []
    fleets = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Fleet"}
    if not fleets:
        problems.append("no Fleet")
    for name, fleet in fleets.items():
        gs = fleet["spec"]["template"]["spec"]
        where = f"Fleet/{name}"
        ports = {p.get("name"): p for p in gs.get("ports") or []}
        for port_name, number in (("quic", 7102), ("udp", 7103)):
            port = ports.get(port_name)
            if not port:
                problems.append(f"{where}: no port named {port_name}")
            elif (port.get("portPolicy"), port.get("containerPort"), port.get("protocol")) != ("Dynamic", number, "UDP"):
                problems.append(f"{where}: port {port_name} must be Dynamic, containerPort {number}, UDP; is {port}")
        health = gs.get("health") or {}
        want = {"disabled": False, "periodSeconds": 5, "failureThreshold": 3, "initialDelaySeconds": 10}
        if {k: health.get(k) for k in want} != want:
            problems.append(f"{where}: health must be {want}; is {health}")
        pod = gs["template"]["spec"]
        shards = [c for c in pod.get("containers") or [] if (c.get("args") or [None])[0] == "shard"]
        if len(shards) != 1:
            problems.append(f"{where}: expected one container running `rally shard`, found {len(shards)}")
            continue
        args = shards[0]["args"]
        if "--agones" not in args and not any(e.get("name") == "RALLY_AGONES" and e.get("value") == "true" for e in shards[0].get("env") or []):
            problems.append(f"{where}: the shard runs without --agones")
        capacity = ((gs.get("counters") or {}).get("matches") or {}).get("capacity")
        max_matches = flag(args, "--max-matches")
        if capacity is None:
            problems.append(f"{where}: no Counter matches with a capacity")
        elif max_matches is None or int(max_matches) != capacity:
            problems.append(f"{where}: Counter matches capacity {capacity} differs from the shard's --max-matches {max_matches}")
        drain = float(flag(args, "--drain-timeout") or 30)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if not grace > drain:
            problems.append(f"{where}: terminationGracePeriodSeconds {grace} must exceed --drain-timeout {drain}")
        if fleet["spec"].get("strategy", {}).get("type", "RollingUpdate") != "RollingUpdate":
            problems.append(f"{where}: strategy must be RollingUpdate (Recreate replaces everything at once)")
    for fas in (o for o in objects if o.get("kind") == "FleetAutoscaler"):
        where = f"FleetAutoscaler/{fas['metadata']['name']}"
        policy = fas["spec"]["policy"]
        counter = policy.get("counter") or {}
        if policy.get("type") != "Counter" or counter.get("key") != "matches":
            problems.append(f"{where}: policy must be Counter on key matches")
        if fas["spec"].get("fleetName") not in fleets:
            problems.append(f"{where}: fleetName {fas['spec'].get('fleetName')} is not a Fleet here")
        buffer, low, high = counter.get("bufferSize"), counter.get("minCapacity", 0), counter.get("maxCapacity")
        if isinstance(buffer, int) and low and low < buffer:
            problems.append(f"{where}: minCapacity {low} must be >= bufferSize {buffer}")
        if high is None or high < max(low, buffer if isinstance(buffer, int) else 0):
            problems.append(f"{where}: maxCapacity {high} must be >= minCapacity and bufferSize")
    for gsa in (o for o in objects if o.get("kind") == "GameServerAllocation"):
        where = "GameServerAllocation"
        selectors = gsa["spec"].get("selectors") or []
        states = [s.get("gameServerState", "Ready") for s in selectors]
        if states[:2] != ["Allocated", "Ready"]:
            problems.append(f"{where}: selectors must be Allocated then Ready; are {states}")
        for s in selectors:
            if (s.get("matchLabels") or {}).get("agones.dev/fleet") not in fleets:
                problems.append(f"{where}: a selector names fleet {(s.get('matchLabels') or {}).get('agones.dev/fleet')}, not a Fleet here")
            if ((s.get("counters") or {}).get("matches") or {}).get("minAvailable", 0) < 1:
                problems.append(f"{where}: every selector must ask for counters.matches.minAvailable >= 1")
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print(f"ok   the Agones objects fit `rally shard --agones` ({len(fleets)} Fleet)")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        sys.exit(main(sys.argv[1:]))
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as error:
        # A required field is missing or has the wrong shape (the schema check reports
        # where); say so instead of a traceback.
        print(f"FAIL an Agones object lacks a field rally needs, or has it in the wrong shape: {error!r}")
        sys.exit(1)
    except (OSError, yaml.YAMLError) as error:
        print(f"FAIL cannot read the manifests: {error}")
        sys.exit(1)
