#!/usr/bin/env python3
"""Checks real HTTP responses against the schemas in openapi.yaml.

    validate.py SPEC --manifest FILE   responses recorded by run.sh, one per
                                       line: METHOD TAB PATH TAB STATUS TAB
                                       CONTENT_TYPE TAB BODY_FILE
    validate.py SPEC --examples        the spec's own examples against their
                                       schemas (a spec whose examples lie is
                                       a spec nobody can trust)
    validate.py --selftest             the validator against known good and
                                       bad documents, so it cannot quietly
                                       accept everything

Output: one line per check, "PASS<TAB>what" or "FAIL<TAB>what<TAB>why";
exit status 1 if anything failed, 2 on a usage or spec-loading error.

Only the Python standard library plus a YAML loader: PyYAML (Debian's
python3-yaml). When the interpreter running us lacks it, we re-run under
/usr/bin/python3, which is where the Debian package installs it.

The JSON-Schema subset is what an OpenAPI 3.1 spec for this service uses:
type (also as a list, for nullable), enum, const, properties, required,
additionalProperties, items, prefixItems, min/maxItems, uniqueItems,
min/maxProperties, minimum/maximum, exclusiveMinimum/Maximum (3.0 booleans
and 3.1 numbers), multipleOf, min/maxLength, pattern, allOf/anyOf/oneOf/not,
OpenAPI 3.0's nullable, and $ref to any "#/..." pointer. Other keywords that
would constrain a value are reported as unsupported (a failure), so a
constraint is never silently skipped; annotations are ignored.
"""
import json
import os
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    alt = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(alt) and os.path.exists(alt) \
            and not os.environ.get("VALIDATE_PY_REEXEC"):
        os.environ["VALIDATE_PY_REEXEC"] = "1"
        os.execv(alt, [alt] + sys.argv)
    sys.stderr.write("validate.py: no YAML loader: install Debian's python3-yaml\n")
    sys.exit(2)

ANNOTATIONS = {
    "title", "description", "example", "examples", "default", "format",
    "readOnly", "writeOnly", "deprecated", "contentMediaType",
    "contentEncoding", "$comment", "externalDocs", "xml", "discriminator",
    "$schema", "$id", "$anchor", "$defs", "definitions", "summary",
}
SUPPORTED = {
    "type", "enum", "const", "properties", "required", "additionalProperties",
    "items", "prefixItems", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
    "maxLength", "pattern", "allOf", "anyOf", "oneOf", "not", "nullable",
    "$ref",
}


class SchemaError(Exception):
    """The schema itself is something we cannot evaluate."""


class Validator:
    def __init__(self, root):
        self.root = root

    def resolve(self, ref):
        if not ref.startswith("#/"):
            raise SchemaError("only local $ref is supported: %r" % ref)
        node = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise SchemaError("unresolvable $ref %r" % ref)
        return node

    def deref(self, node, depth=0):
        """Follows $ref chains of non-schema objects (responses, parameters)."""
        while isinstance(node, dict) and "$ref" in node:
            if depth > 32:
                raise SchemaError("$ref loop")
            node = self.resolve(node["$ref"])
            depth += 1
        return node

    # Returns a list of error strings, empty when inst matches schema.
    def errors(self, inst, schema, path="$", depth=0):
        if depth > 64:
            raise SchemaError("schema nesting too deep (a $ref loop?) at " + path)
        if schema is True or schema == {}:
            return []
        if schema is False:
            return ["%s: no value is allowed here" % path]
        if not isinstance(schema, dict):
            raise SchemaError("schema at %s is not an object: %r" % (path, schema))
        errs = []
        for key in schema:
            if key not in SUPPORTED and key not in ANNOTATIONS and not key.startswith("x-"):
                raise SchemaError("unsupported schema keyword %r at %s" % (key, path))

        if "$ref" in schema:
            errs += self.errors(inst, self.resolve(schema["$ref"]), path, depth + 1)

        if inst is None and schema.get("nullable") is True:
            return errs  # OpenAPI 3.0 style: null is fine whatever the type

        if "type" in schema:
            types = schema["type"]
            if isinstance(types, str):
                types = [types]
            if not any(type_ok(inst, t) for t in types):
                errs.append("%s: expected type %s, got %s" % (path, "/".join(types), json_type(inst)))
                return errs  # further keywords would only add noise

        if "enum" in schema and not any(json_equal(inst, e) for e in schema["enum"]):
            errs.append("%s: %r is not one of %r" % (path, inst, schema["enum"]))
        if "const" in schema and not json_equal(inst, schema["const"]):
            errs.append("%s: %r is not %r" % (path, inst, schema["const"]))

        if is_number(inst):
            errs += number_errors(inst, schema, path)
        if isinstance(inst, str):
            if "minLength" in schema and len(inst) < schema["minLength"]:
                errs.append("%s: string shorter than %d" % (path, schema["minLength"]))
            if "maxLength" in schema and len(inst) > schema["maxLength"]:
                errs.append("%s: string longer than %d" % (path, schema["maxLength"]))
            if "pattern" in schema and not re.search(schema["pattern"], inst):
                errs.append("%s: %r does not match /%s/" % (path, inst, schema["pattern"]))

        if isinstance(inst, list):
            errs += self.array_errors(inst, schema, path, depth)
        if isinstance(inst, dict):
            errs += self.object_errors(inst, schema, path, depth)

        for sub in schema.get("allOf", []):
            errs += self.errors(inst, sub, path, depth + 1)
        if "anyOf" in schema:
            if not any(not self.errors(inst, s, path, depth + 1) for s in schema["anyOf"]):
                errs.append("%s: matches none of anyOf (%s)" % (path, self.why_none(inst, schema["anyOf"], path, depth)))
        if "oneOf" in schema:
            n = sum(1 for s in schema["oneOf"] if not self.errors(inst, s, path, depth + 1))
            if n != 1:
                extra = "" if n else " (%s)" % self.why_none(inst, schema["oneOf"], path, depth)
                errs.append("%s: matches %d of oneOf, expected exactly 1%s" % (path, n, extra))
        if "not" in schema and not self.errors(inst, schema["not"], path, depth + 1):
            errs.append("%s: matches a schema it must not" % path)
        return errs

    def why_none(self, inst, alts, path, depth):
        parts = []
        for s in alts:
            e = self.errors(inst, s, path, depth + 1)
            parts.append(e[0] if e else "ok")
        return "; ".join(parts)

    def array_errors(self, inst, schema, path, depth):
        errs = []
        if "minItems" in schema and len(inst) < schema["minItems"]:
            errs.append("%s: %d items, fewer than %d" % (path, len(inst), schema["minItems"]))
        if "maxItems" in schema and len(inst) > schema["maxItems"]:
            errs.append("%s: %d items, more than %d" % (path, len(inst), schema["maxItems"]))
        if schema.get("uniqueItems"):
            seen = [json.dumps(x, sort_keys=True) for x in inst]
            if len(set(seen)) != len(seen):
                errs.append("%s: items are not unique" % path)
        prefix = schema.get("prefixItems", [])
        for i, sub in enumerate(prefix[:len(inst)]):
            errs += self.errors(inst[i], sub, "%s[%d]" % (path, i), depth + 1)
        items = schema.get("items")
        if items is not None:
            if isinstance(items, list):  # draft-4 tuple form, seen in 3.0 specs
                raise SchemaError("tuple-form items at %s: use prefixItems" % path)
            for i in range(len(prefix), len(inst)):
                errs += self.errors(inst[i], items, "%s[%d]" % (path, i), depth + 1)
        return errs

    def object_errors(self, inst, schema, path, depth):
        errs = []
        for name in schema.get("required", []):
            if name not in inst:
                errs.append("%s: missing required property %r" % (path, name))
        if "minProperties" in schema and len(inst) < schema["minProperties"]:
            errs.append("%s: fewer than %d properties" % (path, schema["minProperties"]))
        if "maxProperties" in schema and len(inst) > schema["maxProperties"]:
            errs.append("%s: more than %d properties" % (path, schema["maxProperties"]))
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name in inst:
                errs += self.errors(inst[name], sub, "%s.%s" % (path, name), depth + 1)
        extra = schema.get("additionalProperties", True)
        if extra is not True:
            for name in inst:
                if name in props:
                    continue
                if extra is False:
                    errs.append("%s: unexpected property %r" % (path, name))
                else:
                    errs += self.errors(inst[name], extra, "%s.%s" % (path, name), depth + 1)
        return errs


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def json_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def type_ok(v, t):
    if t == "integer":
        return is_number(v) and float(v).is_integer()
    if t == "number":
        return is_number(v)
    if t in ("null", "boolean", "string", "array", "object"):
        return json_type(v) == t
    raise SchemaError("unknown type %r" % t)


def json_equal(a, b):
    if is_number(a) and is_number(b):
        return a == b
    if type(a) is not type(b):
        return False
    return a == b


def number_errors(v, s, path):
    errs = []
    if "minimum" in s:
        # OpenAPI 3.0: exclusiveMinimum is a boolean modifier of minimum
        if s.get("exclusiveMinimum") is True and not v > s["minimum"]:
            errs.append("%s: %r is not > %r" % (path, v, s["minimum"]))
        elif v < s["minimum"]:
            errs.append("%s: %r is below the minimum %r" % (path, v, s["minimum"]))
    if "maximum" in s:
        if s.get("exclusiveMaximum") is True and not v < s["maximum"]:
            errs.append("%s: %r is not < %r" % (path, v, s["maximum"]))
        elif v > s["maximum"]:
            errs.append("%s: %r is above the maximum %r" % (path, v, s["maximum"]))
    em, eM = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if is_number(em) and not v > em:
        errs.append("%s: %r is not > %r" % (path, v, em))
    if is_number(eM) and not v < eM:
        errs.append("%s: %r is not < %r" % (path, v, eM))
    if "multipleOf" in s:
        q = v / s["multipleOf"]
        if abs(q - round(q)) > 1e-9:
            errs.append("%s: %r is not a multiple of %r" % (path, v, s["multipleOf"]))
    return errs


def media_base(ct):
    return (ct or "").split(";")[0].strip().lower()


def media_matches(pattern, ct):
    p, c = media_base(pattern), media_base(ct)
    if p == c or p == "*/*":
        return True
    if p.endswith("/*"):
        return c.split("/")[0] == p.split("/")[0]
    return False


def is_json_media(ct):
    b = media_base(ct)
    return b == "application/json" or b.endswith("+json")


def path_regex(template):
    out = ""
    for part in re.split(r"(\{[^}]+\})", template):
        out += "[^/]+" if part.startswith("{") else re.escape(part)
    return re.compile("^" + out + "$")


def find_operation(spec, method, path):
    path = path.split("?")[0]
    paths = spec.get("paths") or {}
    # exact first: a literal path wins over a template that also matches
    cands = [p for p in paths if p == path] or [p for p in paths if path_regex(p).match(path)]
    if not cands:
        return None, None
    item = paths[cands[0]]
    op = item.get(method.lower()) if isinstance(item, dict) else None
    return cands[0], op


def any_operation_with(spec, status, near=None):
    """An operation documenting status: preferably one of the path item
    near, then one whose path starts with the same segment (an unknown
    /v2/... path answers in the /v2 family's error shape), then any."""
    items = list((spec.get("paths") or {}).items())
    first = lambda p: p.strip("/").split("/")[0]
    if near is not None:
        near = near.split("?")[0]
        items = ([it for it in items if it[0] == near]
                 + [it for it in items if it[0] != near and first(it[0]) == first(near)]
                 + items)
    for _, item in items:
        for op in (item or {}).values():
            keys = set(map(str, (op.get("responses") or {}))) if isinstance(op, dict) else set()
            if status in keys or status[0] + "XX" in keys:
                return op
    return None


def find_response(v, op, status):
    # YAML turns an unquoted 200 into an int key: compare as text
    responses = {str(k): r for k, r in (op.get("responses") or {}).items()}
    s = str(status)
    for key in (s, s[0] + "XX", s[0] + "xx", "default"):
        if key in responses:
            return key, v.deref(responses[key])
    return None, None


def check_response(v, spec, method, path, status, ctype, body):
    """Returns (route key, error list) for one recorded response."""
    tpl, op = find_operation(spec, method, path)
    if tpl is None and status == 404:
        # An unknown path cannot have its own entry; its 404 must still be
        # the documented 404 body of the API.
        op = any_operation_with(spec, "404", path)
        if op is None:
            return "%s (unknown path) 404" % method, ["no operation documents a 404 to compare with"]
        tpl = "(unknown path)"
    elif tpl is None:
        return "%s %s %s" % (method, path.split("?")[0], status), ["path not in the spec"]
    key = "%s %s %s" % (method, tpl, status)
    if op is None and status in (404, 405):
        # a method the spec does not list is refused with the API's usual
        # error body: hold it to a documented response of that status
        op = any_operation_with(spec, str(status), tpl)
        if op is None:
            return key, ["no operation documents a %d to compare with" % status]
    elif op is None:
        return key, ["method not in the spec for this path"]
    rkey, resp = find_response(v, op, status)
    if resp is None:
        return key, ["status %s not documented (documented: %s)"
                     % (status, ", ".join(map(str, (op.get("responses") or {}).keys())))]
    content = resp.get("content") or {}
    if not content:
        return key, [] if not body else ["spec documents no body, got %d bytes" % len(body)]
    match = [m for m in content if media_matches(m, ctype)]
    if not match:
        return key, ["content type %r not documented (documented: %s)" % (ctype, ", ".join(content))]
    media = content[match[0]] or {}
    if not is_json_media(ctype):
        return key, []
    try:
        inst = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return key, ["body is not JSON: %s" % e]
    if "schema" not in media:
        return key, ["no schema for %s" % match[0]]
    try:
        return key, v.errors(inst, media["schema"])
    except SchemaError as e:
        return key, ["schema problem: %s" % e]


def load_spec(path):
    with open(path, "rb") as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict) or "paths" not in spec:
        raise ValueError("%s: not an OpenAPI document (no paths)" % path)
    return spec


def run_manifest(spec, manifest):
    v = Validator(spec)
    groups = {}  # key -> [count, first errors, example request]
    with open(manifest) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            method, path, status, ctype, bodyfile = line.split("\t")
            with open(bodyfile, "rb") as bf:
                body = bf.read()
            key, errs = check_response(v, spec, method, path, int(status), ctype, body)
            g = groups.setdefault(key, [0, 0, None])
            g[0] += 1
            if errs:
                g[1] += 1
                if g[2] is None:
                    g[2] = "%s (%s): %s" % (path, bodyfile, "; ".join(errs[:3]))
    failed = 0
    for key in sorted(groups):
        n, bad, why = groups[key]
        if bad:
            failed += 1
            print("FAIL\tresponse %s matches the spec (%d of %d bad)\t%s" % (key, bad, n, why))
        else:
            print("PASS\tresponse %s matches the spec (%d checked)" % (key, n))
    return failed


def iter_examples(spec):
    """Yields (where, value, schema) for examples that sit beside a schema."""
    for p, item in (spec.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for m, op in item.items():
            if not isinstance(op, dict):
                continue
            bodies = []
            rb = op.get("requestBody")
            if rb:
                bodies.append(("request", rb))
            for st, r in (op.get("responses") or {}).items():
                bodies.append((str(st), r))
            for tag, obj in bodies:
                if "$ref" in obj:
                    obj = Validator(spec).deref(obj)
                for ct, media in (obj.get("content") or {}).items():
                    if not is_json_media(ct) or not isinstance(media, dict) or "schema" not in media:
                        continue
                    where = "%s %s %s %s" % (m.upper(), p, tag, ct)
                    if "example" in media:
                        yield where + " example", media["example"], media["schema"]
                    for name, ex in (media.get("examples") or {}).items():
                        ex = Validator(spec).deref(ex)
                        if isinstance(ex, dict) and "value" in ex:
                            yield "%s examples.%s" % (where, name), ex["value"], media["schema"]
    for name, sch in ((spec.get("components") or {}).get("schemas") or {}).items():
        if isinstance(sch, dict):
            if "example" in sch:
                yield "components.schemas.%s example" % name, sch["example"], sch
            for i, ex in enumerate(sch.get("examples") or []):
                yield "components.schemas.%s examples[%d]" % (name, i), ex, sch


def run_examples(spec):
    v = Validator(spec)
    failed = n = 0
    for where, value, schema in iter_examples(spec):
        n += 1
        try:
            errs = v.errors(value, schema)
        except SchemaError as e:
            errs = ["schema problem: %s" % e]
        if errs:
            failed += 1
            print("FAIL\tspec example %s matches its schema\t%s" % (where, "; ".join(errs[:3])))
    if n == 0:
        print("FAIL\tspec has examples to check\tno JSON example found beside any schema")
        return 1
    if not failed:
        print("PASS\tall %d JSON examples in the spec match their schemas" % n)
    return failed


def selftest():
    spec = {
        "paths": {"/p": {"post": {"responses": {
            200: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ok"}}}},
            "4XX": {"$ref": "#/components/responses/Err"}}}}},
        "components": {
            "responses": {"Err": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Ok": {"type": "object", "required": ["prediction", "probabilities"],
                       "properties": {
                           "prediction": {"type": "integer", "minimum": 0, "maximum": 9},
                           "probabilities": {"type": "array", "minItems": 10, "maxItems": 10,
                                             "items": {"type": "number", "minimum": 0, "maximum": 1}},
                           "model": {"type": ["string", "null"]},
                           "kind": {"enum": ["a", "b"]},
                           "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}},
                "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                          "properties": {"error": {"type": "object", "required": ["code", "message"],
                                                   "properties": {"code": {"type": "string", "minLength": 1},
                                                                  "message": {"type": "string"}}}}}}}}
    v = Validator(spec)
    good = {"prediction": 3, "probabilities": [0.1] * 10, "model": None, "kind": "a", "either": 2}
    cases = [
        (good, True),
        (dict(good, prediction=10), False),
        (dict(good, prediction=2.5), False),
        (dict(good, prediction=True), False),
        (dict(good, prediction=4.0), True),
        (dict(good, probabilities=[0.1] * 9), False),
        (dict(good, probabilities=[0.1] * 9 + ["x"]), False),
        (dict(good, model=7), False),
        (dict(good, kind="c"), False),
        (dict(good, either=[]), False),
        ({"probabilities": [0.1] * 10}, False),
    ]
    failed = 0
    for i, (doc, want) in enumerate(cases):
        got = not v.errors(doc, {"$ref": "#/components/schemas/Ok"})
        if got != want:
            failed += 1
            print("FAIL\tvalidator self-test case %d\texpected %s, got %s" % (i, want, got))
    resp_cases = [
        (200, "application/json", json.dumps(good), True),
        (200, "text/plain", "3", False),
        (404, "application/json", '{"error":{"code":"x","message":"m"}}', True),
        (404, "application/json", '{"error":{"code":"","message":"m"}}', False),
        (404, "application/json", '{"error":{"code":"x","message":"m"},"x":1}', False),
        (500, "application/json", '{"error":{"code":"x","message":"m"}}', False),
        (200, "application/json", "not json", False),
    ]
    resp_cases += [
        (404, "application/json", '{"error":{"code":"x","message":"m"}}', True, "/nope"),
        (404, "application/json", '{"error":{"code":1,"message":"m"}}', False, "/nope"),
        (405, "application/json", '{"error":{"code":"x","message":"m"}}', False, "/nope"),
    ]
    for i, case in enumerate(resp_cases):
        st, ct, body, want = case[:4]
        path = case[4] if len(case) > 4 else "/p?model=x"
        _, errs = check_response(v, spec, "POST", path, st, ct, body.encode())
        if (not errs) != want:
            failed += 1
            print("FAIL\tvalidator self-test response case %d\texpected %s, got %s" % (i, want, errs))
    try:
        v.errors(1, {"type": "integer", "propertyNames": {}})
        failed += 1
        print("FAIL\tvalidator self-test: unsupported keyword\tnot reported")
    except SchemaError:
        pass
    if not failed:
        print("PASS\tschema validator self-test (%d cases)" % (len(cases) + len(resp_cases) + 1))
    return failed


def main(argv):
    if argv[1:] == ["--selftest"]:
        return 1 if selftest() else 0
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    try:
        spec = load_spec(argv[1])
    except (OSError, ValueError, yaml.YAMLError) as e:
        print("FAIL\tspec loads\t%s" % str(e).replace("\n", " "))
        return 2
    if argv[2] == "--manifest" and len(argv) == 4:
        return 1 if run_manifest(spec, argv[3]) else 0
    if argv[2] == "--examples":
        return 1 if run_examples(spec) else 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
