// validate.js FILE.yaml... - checks every object of rendered Kubernetes
// manifests (e.g. `kubectl kustomize deploy/kubernetes > all.yaml`) against
// the Kubernetes API schemas that the npm package kubernetes-models ships.
//
// Two checks per object:
//   1. the schema's own validate(): types, required fields, enums, formats;
//   2. unknown fields. The schemas, like the API server's, allow fields they
//      do not name, so a typo ("readinesProbe") would pass check 1 and be
//      dropped silently by a cluster. The validator is run on a proxy that
//      records every field it looks at; a field it never looked at is one
//      the schema does not know, and is reported.
// KServe's InferenceService has no schema in the package: its predictor is a
// Kubernetes PodSpec plus KServe's component fields, so the PodSpec part is
// checked against the PodSpec schema, and the KServe fields against the
// short list below (from KServe's v1beta1 API reference).
//
// Prints one line per object ("ok KIND/NAME" or "FAIL KIND/NAME: why") and
// exits 1 if any object failed, 2 on unusable input.
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

// The schema validator for apiVersion/kind, e.g. "apps/v1"/"Deployment":
// the package's model module names its schema module; that module exports
// an Ajv-style validate(data) -> boolean, with validate.errors.
function schemaFor(apiVersion, kind) {
    let file;
    try {
        file = require.resolve(path.posix.join("kubernetes-models", apiVersion, kind));
    } catch (e) {
        return null;
    }
    const m = /_schemas\/(\w+)\.js/.exec(fs.readFileSync(file, "utf8"));
    if (!m)
        return null;
    return require(path.join(path.dirname(require.resolve("kubernetes-models/package.json")),
                             "_schemas", m[1] + ".js")).validate;
}

// Runs validate(data) through a recording proxy. Returns the list of
// problems: schema errors, then paths of fields the schema never read.
function checkWith(validateFn, data) {
    const seen = new Map();              // object -> Set of keys read
    const proxies = new WeakMap();
    function wrap(obj) {
        if (obj === null || typeof obj !== "object")
            return obj;
        if (proxies.has(obj))
            return proxies.get(obj);
        seen.set(obj, new Set());
        const p = new Proxy(obj, {
            get(t, k, r) {
                if (typeof k === "string")
                    seen.get(t).add(k);
                return wrap(Reflect.get(t, k, r));
            },
            has(t, k) {
                if (typeof k === "string")
                    seen.get(t).add(k);
                return Reflect.has(t, k);
            },
            getOwnPropertyDescriptor(t, k) {
                if (typeof k === "string")
                    seen.get(t).add(k);
                return Reflect.getOwnPropertyDescriptor(t, k);
            },
        });
        proxies.set(obj, p);
        return p;
    }
    const problems = [];
    // The schemas are compiled to report all errors, so every field they
    // know is read even when one is wrong.
    try {
        validateFn(wrap(data));
    } catch (e) {
        problems.push(String(e.message || e).split("\n").join("; "));
    }
    (function walk(obj, where) {
        if (obj === null || typeof obj !== "object")
            return;
        const read = seen.get(obj) || new Set();
        for (const k of Object.keys(obj)) {
            const at = Array.isArray(obj) ? `${where}[${k}]` : `${where}.${k}`;
            if (!read.has(k))
                problems.push(`unknown field ${at}`);
            else
                walk(obj[k], at);
        }
    })(data, "");
    return problems;
}

function validateWith(schema, data) {
    return checkWith(d => {
        if (!schema(d))
            throw new Error(schema.errors.map(e =>
                `${e.instancePath || "/"} ${e.keyword}: ${JSON.stringify(e.params)}`).join("; "));
    }, data);
}

// KServe v1beta1 ComponentExtensionSpec (the predictor's own fields) with
// the JSON type each must have.
const KSERVE_COMPONENT = {
    minReplicas: "number", maxReplicas: "number", scaleTarget: "number",
    scaleMetric: "string", containerConcurrency: "number", timeout: "number",
    canaryTrafficPercent: "number", logger: "object", batcher: "object",
    labels: "object", annotations: "object", deploymentStrategy: "object",
};
const KSERVE_SCALE_METRICS = ["cpu", "memory", "concurrency", "rps"];

function validateInferenceService(obj) {
    const problems = [];
    if (obj.apiVersion !== "serving.kserve.io/v1beta1")
        problems.push(`apiVersion ${obj.apiVersion}: expected serving.kserve.io/v1beta1`);
    for (const k of Object.keys(obj))
        if (!["apiVersion", "kind", "metadata", "spec"].includes(k))
            problems.push(`unknown field .${k}`);
    const meta = require("@kubernetes-models/apimachinery/_schemas/IoK8sApimachineryPkgApisMetaV1ObjectMeta").validate;
    problems.push(...validateWith(meta, obj.metadata || {}).map(p => "metadata: " + p));
    const spec = obj.spec || {};
    for (const k of Object.keys(spec))
        if (!["predictor", "transformer", "explainer"].includes(k))
            problems.push(`unknown field .spec.${k}`);
    const pred = spec.predictor;
    if (!pred || typeof pred !== "object") {
        problems.push("spec.predictor is required");
        return problems;
    }
    const podSpec = {};
    for (const [k, v] of Object.entries(pred)) {
        if (k in KSERVE_COMPONENT) {
            if (typeof v !== KSERVE_COMPONENT[k])
                problems.push(`spec.predictor.${k} must be a ${KSERVE_COMPONENT[k]}`);
        } else {
            podSpec[k] = v;
        }
    }
    if ("scaleMetric" in pred && !KSERVE_SCALE_METRICS.includes(pred.scaleMetric))
        problems.push(`spec.predictor.scaleMetric must be one of ${KSERVE_SCALE_METRICS}`);
    problems.push(...validateWith(schemaFor("v1", "PodSpec"), podSpec)
                  .map(p => "spec.predictor (PodSpec): " + p));
    const c0 = (pred.containers || [])[0] || {};
    const proto = (c0.env || []).find(e => e.name === "PROTOCOL");
    if (proto && !["v1", "v2"].includes(proto.value))
        problems.push(`PROTOCOL must be v1 or v2, not ${proto.value}`);
    return problems;
}

function main(files) {
    if (files.length === 0) {
        console.error("usage: node validate.js FILE.yaml...");
        return 2;
    }
    let failed = 0, n = 0;
    for (const f of files) {
        let docs;
        try {
            docs = YAML.parseAllDocuments(fs.readFileSync(f, "utf8"));
        } catch (e) {
            console.error(`${f}: ${e.message}`);
            return 2;
        }
        for (const doc of docs) {
            if (doc.errors.length) {
                console.log(`FAIL ${f}: YAML: ${doc.errors[0].message}`);
                failed++;
                continue;
            }
            const obj = doc.toJS();
            if (obj === null || obj === undefined)
                continue;
            n++;
            const id = `${obj.kind}/${(obj.metadata || {}).name}`;
            let problems;
            if (obj.kind === "InferenceService") {
                problems = validateInferenceService(obj);
            } else {
                const schema = schemaFor(String(obj.apiVersion), String(obj.kind));
                problems = schema ? validateWith(schema, obj)
                                  : [`no schema for ${obj.apiVersion} ${obj.kind}`];
            }
            if (problems.length) {
                failed++;
                console.log(`FAIL ${id}: ${problems.join("; ")}`);
            } else {
                console.log(`ok ${id}`);
            }
        }
    }
    if (n === 0) {
        console.log("FAIL: no objects found");
        return 1;
    }
    return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
