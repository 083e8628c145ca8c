#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests (the output of `kubectl kustomize`).

Usage: validate.py --kubernetes-version 1.33.0 --schemas deploy/schemas [--context FILE]... FILE...

Every object must pass, or the exit status is 1 and each problem is printed:
  * built-in kinds: kubernetes-validate --strict for that Kubernetes version (an unknown
    field, a wrong type or a kind/apiVersion the version does not serve fails; so does a
    kind kubernetes-validate has no schema for, which it would only warn about);
  * custom resources: check-jsonschema against the JSON Schema converted from the
    pinned CRD (deploy/schemas/<project>/<kind>_<version>.json, see the READMEs there);
    a custom kind without a schema there fails;
  * the pod template inside an Agones Fleet or GameServer is validated again as a
    Kubernetes PodTemplate by kubernetes-validate --strict (the CRD schema is looser);
  * references inside the files given: every Secret, ConfigMap and key a pod reads
    exists, every Service, PodDisruptionBudget and PodMonitor selects some pod template,
    every autoscaler's target exists, named probe and Service ports exist, and no two
    objects share kind, namespace and name.
Tools are run from the same virtual environment as this script's interpreter.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import yaml

# API groups of custom resources -> directory under --schemas.
CRD_GROUPS = {
    "agones.dev": "agones",
    "autoscaling.agones.dev": "agones",
    "allocation.agones.dev": "agones",
    "gateway.networking.k8s.io": "gateway-api",
    "monitoring.coreos.com": "prometheus-operator",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def tool(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def ident(obj):
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name') or meta.get('generateName')}" + (f" (namespace {meta['namespace']})" if meta.get("namespace") else "")


def mapping(value):
    """value if it is a mapping, else {}: malformed objects are the schema checks' to report."""
    return value if isinstance(value, dict) else {}


def pod_templates(obj):
    """(labels, pod spec) of the pods an object runs."""
    kind, spec = obj.get("kind"), mapping(obj.get("spec"))
    if kind in POD_TEMPLATE_KINDS:
        template = mapping(spec.get("template"))
        yield mapping(mapping(template.get("metadata")).get("labels")), mapping(template.get("spec"))
    elif kind == "CronJob":
        template = mapping(mapping(mapping(spec.get("jobTemplate")).get("spec")).get("template"))
        yield mapping(mapping(template.get("metadata")).get("labels")), mapping(template.get("spec"))
    elif kind in ("Fleet", "GameServerSet"):
        gameserver = mapping(spec.get("template"))
        labels = dict(mapping(mapping(gameserver.get("metadata")).get("labels")))
        template = mapping(mapping(gameserver.get("spec")).get("template"))
        # Agones copies the GameServer's labels onto its pod.
        labels.update(mapping(mapping(template.get("metadata")).get("labels")))
        yield labels, mapping(template.get("spec"))
    elif kind == "GameServer":
        labels = dict(mapping(mapping(obj.get("metadata")).get("labels")))
        template = mapping(spec.get("template"))
        labels.update(mapping(mapping(template.get("metadata")).get("labels")))
        yield labels, mapping(template.get("spec"))


def selects(selector, labels):
    """Whether a Kubernetes label selector (or a bare Service map) matches labels."""
    if selector is None:
        return False
    match_labels = selector.get("matchLabels", {}) if ("matchLabels" in selector or "matchExpressions" in selector) else selector
    for key, value in match_labels.items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []) if isinstance(selector.get("matchExpressions"), list) else []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_references(objects, context):
    problems = []
    seen = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        key = (obj.get("apiVersion", "").split("/")[0] if "/" in obj.get("apiVersion", "") else "", obj.get("kind"), meta.get("namespace"), meta.get("name"))
        if key in seen:
            problems.append(f"{ident(obj)}: defined twice")
        seen[key] = obj

    def data_keys(kind, name, namespace):
        for obj in objects + context:
            meta = obj.get("metadata") or {}
            if obj.get("kind") == kind and meta.get("name") == name and meta.get("namespace") == namespace:
                return set((obj.get("data") or {}).keys()) | set((obj.get("stringData") or {}).keys()) | set((obj.get("binaryData") or {}).keys())
        return None

    templates = []  # (owner, namespace, labels, pod spec)
    for obj in objects:
        for labels, spec in pod_templates(obj):
            templates.append((obj, (obj.get("metadata") or {}).get("namespace"), labels, spec))

    for owner, namespace, _labels, spec in templates:
        where = ident(owner)

        def need(kind, name, key=None, optional=False):
            if optional:
                return
            keys = data_keys(kind, name, namespace)
            if keys is None:
                problems.append(f"{where}: reads {kind} {name}, which is not in the rendered output")
            elif key is not None and key not in keys:
                problems.append(f"{where}: reads key {key} of {kind} {name}, which has only {sorted(keys)}")

        for volume in spec.get("volumes") or []:
            if "secret" in volume:
                need("Secret", volume["secret"].get("secretName"), optional=volume["secret"].get("optional", False))
            if "configMap" in volume:
                need("ConfigMap", volume["configMap"].get("name"), optional=volume["configMap"].get("optional", False))
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            port_names = {port.get("name") for port in container.get("ports") or [] if port.get("name")}
            for source in container.get("envFrom") or []:
                if "configMapRef" in source:
                    need("ConfigMap", source["configMapRef"].get("name"), optional=source["configMapRef"].get("optional", False))
                if "secretRef" in source:
                    need("Secret", source["secretRef"].get("name"), optional=source["secretRef"].get("optional", False))
            for env in container.get("env") or []:
                ref = env.get("valueFrom") or {}
                if "configMapKeyRef" in ref:
                    need("ConfigMap", ref["configMapKeyRef"].get("name"), ref["configMapKeyRef"].get("key"), ref["configMapKeyRef"].get("optional", False))
                if "secretKeyRef" in ref:
                    need("Secret", ref["secretKeyRef"].get("name"), ref["secretKeyRef"].get("key"), ref["secretKeyRef"].get("optional", False))
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(probe_name) or {}
                for handler in ("httpGet", "tcpSocket"):
                    port = (probe.get(handler) or {}).get("port")
                    if isinstance(port, str) and port not in port_names:
                        problems.append(f"{where}: {container.get('name')}.{probe_name} uses port {port}, which the container does not name")

    for obj in objects:
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        namespace = (obj.get("metadata") or {}).get("namespace")
        local = [t for t in templates if t[1] == namespace]
        if kind == "Service" and spec.get("selector"):
            matched = [t for t in local if selects(spec["selector"], t[2])]
            if not matched:
                problems.append(f"{ident(obj)}: its selector {spec['selector']} matches no pod template")
            for port in spec.get("ports") or []:
                target = port.get("targetPort")
                if isinstance(target, str):
                    for owner, _, _, pod in matched:
                        names = {p.get("name") for c in pod.get("containers") or [] for p in c.get("ports") or []}
                        if target not in names:
                            problems.append(f"{ident(obj)}: targetPort {target} is not a port of {ident(owner)}")
        if kind in ("PodDisruptionBudget", "PodMonitor") and not any(selects(spec.get("selector"), t[2]) for t in local):
            problems.append(f"{ident(obj)}: its selector matches no pod template")
        if kind == "HorizontalPodAutoscaler":
            target = spec.get("scaleTargetRef") or {}
            if not any(o.get("kind") == target.get("kind") and (o.get("metadata") or {}).get("name") == target.get("name")
                       and (o.get("metadata") or {}).get("namespace") == namespace for o in objects):
                problems.append(f"{ident(obj)}: scaleTargetRef {target.get('kind')}/{target.get('name')} is not in the rendered output")
        if kind == "FleetAutoscaler":
            fleet = spec.get("fleetName")
            if not any(o.get("kind") == "Fleet" and (o.get("metadata") or {}).get("name") == fleet for o in objects):
                problems.append(f"{ident(obj)}: fleetName {fleet} is not in the rendered output")
    return problems


def run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    return result.returncode, (result.stdout + result.stderr).strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("--schemas", required=True, help="directory with the CRD JSON Schemas")
    parser.add_argument("--context", action="append", default=[], metavar="FILE",
                        help="rendered objects that references may point to, not validated themselves "
                             "(deploy/agones reads the Secrets and ConfigMaps of a deploy/k8s overlay)")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    def load(paths):
        loaded = []
        for path in paths:
            with open(path, encoding="utf-8") as source:
                loaded.extend(doc for doc in yaml.safe_load_all(source) if doc is not None)
        return loaded

    try:
        objects, context = load(args.files), load(args.context)
    except (OSError, yaml.YAMLError) as error:
        print(f"FAIL cannot read the manifests: {error}")
        return 1
    problems = []
    for obj in objects:
        if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind") or not ((obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get("generateName")):
            problems.append(f"an object without apiVersion, kind or metadata.name (or generateName): {str(obj)[:200]}")
    if problems:
        print("\n".join(f"FAIL {p}" for p in problems))
        return 1
    if not objects:
        print("FAIL no objects in " + " ".join(args.files))
        return 1

    builtin, custom = [], {}  # custom: schema path -> [(obj, file)]
    with tempfile.TemporaryDirectory(prefix="rally-validate-") as tmp:
        for index, obj in enumerate(objects):
            path = os.path.join(tmp, f"{index:03d}-{obj['kind'].lower()}-{obj['metadata'].get('name') or obj['metadata']['generateName']}.yaml")
            with open(path, "w", encoding="utf-8") as out:
                yaml.safe_dump(obj, out)
            api_version = obj["apiVersion"]
            group, _, version = api_version.rpartition("/")
            if group in CRD_GROUPS:
                schema = os.path.join(args.schemas, CRD_GROUPS[group], f"{obj['kind'].lower()}_{version}.json")
                if not os.path.isfile(schema):
                    problems.append(f"{ident(obj)}: no schema for {api_version} {obj['kind']} (looked for {schema})")
                    continue
                custom.setdefault(schema, []).append((obj, path))
                for _labels, _spec in pod_templates(obj):
                    source = mapping(mapping(obj.get("spec")).get("template"))
                    pod = mapping(source.get("spec")).get("template") if obj["kind"] != "GameServer" else source
                    if not isinstance(pod, dict):
                        continue  # the CRD schema check reports the missing pod template
                    wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                               "metadata": {"name": f"{obj['kind'].lower()}-{obj['metadata'].get('name') or 'generated'}-pod"},
                               "template": pod}
                    pod_path = path[:-5] + "-pod.yaml"
                    with open(pod_path, "w", encoding="utf-8") as out:
                        yaml.safe_dump(wrapped, out)
                    builtin.append((f"{ident(obj)} pod template", pod_path))
            elif "." in group and not group.endswith(".k8s.io"):
                problems.append(f"{ident(obj)}: {api_version} is a custom resource of an unknown project; add its schema under {args.schemas} and to CRD_GROUPS")
            else:
                builtin.append((ident(obj), path))

        if builtin:
            # One run for every built-in object; its report names the file of each failure.
            code, output = run([tool("kubernetes-validate"), "--strict", "--quiet", "--kubernetes-version",
                                args.kubernetes_version] + [path for _, path in builtin])
            bad = [line for line in output.splitlines() if line.startswith(("ERROR", "WARN", "FATAL"))]
            for what, path in builtin:
                mine = [line.replace(path, os.path.basename(path)) for line in bad if path in line]
                if mine:
                    problems.append(f"{what}: kubernetes-validate {args.kubernetes_version} --strict: " + " | ".join(mine))
                else:
                    print(f"ok   {what}: Kubernetes {args.kubernetes_version} (strict)")
            unattributed = [line for line in bad if not any(path in line for _, path in builtin)]
            if unattributed or (code != 0 and not bad):
                problems.append("kubernetes-validate: " + (" | ".join(unattributed) or output or f"exit {code}"))
        for schema, entries in sorted(custom.items()):
            code, output = run([tool("check-jsonschema"), "--schemafile", schema] + [path for _, path in entries])
            for obj, path in entries:
                if code != 0 and (path in output or len(entries) == 1):
                    problems.append(f"{ident(obj)}: check-jsonschema against {os.path.relpath(schema)}:\n      "
                                    + output.replace(os.path.dirname(path) + "/", "").replace("\n", "\n      "))
                else:
                    print(f"ok   {ident(obj)}: {os.path.relpath(schema)}")
            if code != 0 and not any(path in output for _, path in entries) and len(entries) > 1:
                problems.append(f"check-jsonschema against {os.path.relpath(schema)}: {output or f'exit {code}'}")

    problems.extend(check_references(objects, context))
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"FAIL {problem}")
        return 1
    print(f"all {len(objects)} objects valid")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyError, TypeError, AttributeError) as error:
        # The schema checks above report malformed objects; the reference checks assume
        # well-formed ones.
        print(f"FAIL an object has a field in the wrong shape for the reference checks: {error!r}")
        sys.exit(1)
