#!/usr/bin/env python3
"""Checks that the manifests only pass flags and RALLY_* variables the binary has.

Usage: flags.py RALLY_BINARY RENDERED_YAML...

For every container whose first argument is a rally role (lobby, matchmaker, shard, ...),
each `--flag` in its args and each RALLY_* variable in its `env` must appear in
`rally <role> --help` (clap lists a flag's variable as `[env: RALLY_...]`); each RALLY_*
key of a ConfigMap a container loads with envFrom must be a variable of the lobby, the
matchmaker or the shard (the shared rally-config holds settings of several roles, some of
them loaded only by deploy/agones' shards). A typo, or a flag the
binary does not have yet, would make the pod exit at start; this finds it without a
cluster.
"""

import re
import subprocess
import sys

import yaml

ROLES = {"lobby", "matchmaker", "shard", "tournament", "bot", "health"}


def containers(obj):
    spec = obj.get("spec") or {}
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        pod = (spec.get("template") or {}).get("spec") or {}
    elif obj.get("kind") == "Fleet":
        pod = (((spec.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    else:
        return []
    return pod.get("containers") or []


def main(binary, paths):
    objects = [o for p in paths for o in yaml.safe_load_all(open(p, encoding="utf-8")) if o]
    config_maps = {(o["metadata"]["name"]): o.get("data") or {} for o in objects if o.get("kind") == "ConfigMap"}
    helps, problems, loaders = {}, [], set()

    def help_of(role):
        if role not in helps:
            result = subprocess.run([binary, role, "--help"], capture_output=True, text=True)
            if result.returncode != 0:
                problems.append(f"`{binary} {role} --help` failed: {result.stderr.strip()[:300]}")
            helps[role] = result.stdout if result.returncode == 0 else ""
        return helps[role]

    for obj in objects:
        for container in containers(obj):
            args = container.get("args") or []
            if not args or args[0] not in ROLES:
                continue
            role = args[0]
            where = f"{obj['kind']}/{obj['metadata']['name']} ({role})"
            text = help_of(role)
            if not text:
                continue
            for arg in args[1:]:
                if arg.startswith("--"):
                    name = arg.split("=", 1)[0]
                    if not re.search(re.escape(name) + r"(?![\w-])", text):
                        problems.append(f"{where}: `rally {role} --help` has no {name}")
            for env in container.get("env") or []:
                name = env.get("name", "")
                if name.startswith("RALLY_") and f"env: {name}=" not in text and f"env: {name}]" not in text:
                    problems.append(f"{where}: `rally {role} --help` names no variable {name}")
            for source in container.get("envFrom") or []:
                ref = (source.get("configMapRef") or {}).get("name")
                if ref in config_maps:
                    loaders.add(ref)
    services = ("lobby", "matchmaker", "shard")
    for name in loaders:
        for key in config_maps[name]:
            if key.startswith("RALLY_") and not any(f"env: {key}=" in help_of(r) or f"env: {key}]" in help_of(r) for r in services):
                problems.append(f"ConfigMap/{name}: {key} is a variable of none of {', '.join(services)}")
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print(f"ok   every flag and RALLY_* variable is one `{binary} ROLE --help` lists ({', '.join(sorted(helps))})")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        sys.exit(main(sys.argv[1], sys.argv[2:]))
    except OSError as error:
        print(f"FAIL cannot run the binary or read the manifests: {error}")
        sys.exit(1)
    except (KeyError, TypeError, AttributeError) as error:
        print(f"FAIL an object lacks metadata.name or has a field in the wrong shape: {error!r}")
        sys.exit(1)
