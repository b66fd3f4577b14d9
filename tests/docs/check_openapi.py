"""Checks Herald's OpenAPI document with real validators.

Usage: check_openapi.py DOCUMENT.json [RESPONSES.json]

The document must validate as OpenAPI 3.1 (openapi-spec-validator; every problem is listed). Each recorded response
({"path", "method", "status", "body"}, the path as the document spells it) must validate against
the JSON schema the document gives for that operation and status (jsonschema, draft 2020-12, the
document's own `$ref`s resolved). Prints one line per failure and exits 1 if there is any.
"""

import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = "urn:herald:openapi"


def pointer(*parts):
    return "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    problems = [f"invalid OpenAPI: {e.message}" for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    if problems:
        print("\n".join(problems))
        return 1
    print(f"valid OpenAPI {doc['openapi']}: {sum(len(v) for v in doc['paths'].values())} operations")
    if len(sys.argv) < 3:
        return 0
    with open(sys.argv[2]) as f:
        responses = json.load(f)
    registry = Registry().with_resource(BASE, Resource.from_contents(doc, default_specification=DRAFT202012))
    failures = 0
    for r in responses:
        operation = doc["paths"].get(r["path"], {}).get(r["method"])
        if operation is None:
            print(f"FAIL {r['method']} {r['path']}: not in the document")
            failures += 1
            continue
        status = str(r["status"])
        if status not in operation["responses"]:
            print(f"FAIL {r['method']} {r['path']}: status {status} is not documented")
            failures += 1
            continue
        content = operation["responses"][status].get("content", {})
        if "application/json" not in content:
            print(f"FAIL {r['method']} {r['path']} {status}: no JSON schema documented")
            failures += 1
            continue
        ref = "#/" + pointer("paths", r["path"], r["method"], "responses", status, "content", "application/json", "schema")
        validator = Draft202012Validator({"$ref": BASE + ref}, registry=registry)
        errors = sorted(validator.iter_errors(r["body"]), key=lambda e: list(e.path))
        for e in errors:
            at = "/".join(str(p) for p in e.path)
            print(f"FAIL {r['method']} {r['path']} {status} at /{at}: {e.message}")
        failures += len(errors)
        if not errors:
            print(f"ok   {r['method']} {r['path']} {status}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
