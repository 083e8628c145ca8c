#!/usr/bin/env python3
"""Turn the openAPIV3Schema of CustomResourceDefinitions into JSON Schema files.

Usage: crd_to_jsonschema.py OUT_DIR CRD_YAML...   (a CRD_YAML of "-" reads stdin)

Writes OUT_DIR/<kind>_<version>.json (lowercase) for every served version of every
CustomResourceDefinition in the inputs; other documents in the inputs are skipped.

The conversion follows kubeconform's scripts/openapi2jsonschema.py (the usual way to get
CRD schemas for offline validation), with three differences, each so that the file says
what the API server would say:
  * an object with `properties` gets `additionalProperties: false` unless it has
    `x-kubernetes-preserve-unknown-fields: true` (the API server prunes, or with
    `kubectl apply`'s default strict field validation rejects, unknown fields; kubeconform's
    script ignores preserve-unknown-fields);
  * `nullable: true` becomes a `null` in `type` (OpenAPI 3.0 spelling -> JSON Schema);
  * the root pins `apiVersion` and `kind` to the CRD's group/version and kind, so a typo
    there is caught instead of silently validating against the wrong schema.
The result is a draft-04 schema: OpenAPI 3.0 schema objects are draft-04 style (boolean
exclusiveMinimum). What JSON Schema cannot express is not checked: CEL rules
(`x-kubernetes-validations`), list-map keys, and defaulting.
"""

import json
import os
import sys

import yaml

DRAFT = "http://json-schema.org/draft-04/schema#"


def convert(node, root=False):
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: convert(value) for key, value in node.items()}
    if out.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = out["enum"] + [None]
    if out.get("x-kubernetes-int-or-string") is True and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        not root
        and "properties" in out
        and "additionalProperties" not in out
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


def root_schema(crd, version):
    schema = convert(version["schema"]["openAPIV3Schema"], root=True)
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
    properties["kind"] = {"type": "string", "enum": [kind]}
    properties.setdefault("metadata", {"type": "object"})
    required = schema.setdefault("required", [])
    for field in ("apiVersion", "kind", "metadata"):
        if field not in required:
            required.append(field)
    schema["additionalProperties"] = False
    return {"$schema": DRAFT, **schema}


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    out_dir = argv[1]
    written = 0
    for path in argv[2:]:
        with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as source:
            documents = [doc for doc in yaml.safe_load_all(source) if doc]
        for crd in documents:
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"]["versions"]:
                if not version.get("served", True) or "schema" not in version:
                    continue
                name = f"{crd['spec']['names']['kind']}_{version['name']}".lower() + ".json"
                with open(os.path.join(out_dir, name), "w", encoding="utf-8") as out:
                    json.dump(root_schema(crd, version), out, indent=1, sort_keys=True)
                    out.write("\n")
                print(f"wrote {os.path.join(out_dir, name)}")
                written += 1
    if written == 0:
        sys.exit("no CustomResourceDefinition with a schema in the inputs")


if __name__ == "__main__":
    main(sys.argv)
