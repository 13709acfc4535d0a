#!/usr/bin/env python3
"""Prometheus text-format checks for run.sh (standard library only).

    metrics.py FILE families          check the metric families the API
                                      promises; print one line per problem
    metrics.py FILE sum NAME [K=V..]  sum of NAME's samples whose labels
                                      include every K=V (0 when none)

Families /metrics must carry (issue: "request counter by route and status,
latency histogram, inference-time histogram, in-flight gauge, predictions by
digit, model info"), as the server names them:
  mnist_http_requests_total              counter   route, status
  mnist_http_request_duration_seconds    histogram route
  mnist_inference_duration_seconds       histogram model
  mnist_http_requests_in_flight          gauge
  mnist_predictions_total                counter   model, class (0..9 for digits)
  mnist_model_info                       gauge     model
"""
import re
import sys

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse(text):
    types, samples, problems = {}, [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = SAMPLE.match(line)
        if not m:
            problems.append("line %d is not a sample: %r" % (n, line))
            continue
        labels = {}
        rest = m.group(3) or ""
        pos = 0
        while pos < len(rest):
            lm = LABEL.match(rest, pos)
            if not lm or lm.end() == pos:
                problems.append("line %d: bad labels %r" % (n, rest))
                break
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        try:
            value = float(m.group(4))
        except ValueError:
            problems.append("line %d: bad value %r" % (n, m.group(4)))
            continue
        samples.append((m.group(1), labels, value))
    return types, samples, problems


def family_of(sample_name, types):
    for suffix in ("", "_bucket", "_sum", "_count", "_total", "_created"):
        if suffix and not sample_name.endswith(suffix):
            continue
        base = sample_name[:len(sample_name) - len(suffix)] if suffix else sample_name
        if base in types:
            return base
    return None


def families(text):
    types, samples, problems = parse(text)
    for s in samples:
        if family_of(s[0], types) is None:
            problems.append("sample %s has no # TYPE line" % s[0])

    def labels_of(fam):
        ls = set()
        for name, labels, _ in samples:
            if family_of(name, types) == fam:
                ls |= set(labels)
        return ls

    want = [("mnist_http_requests_total", "counter", {"route", "status"}),
            ("mnist_http_request_duration_seconds", "histogram", {"route"}),
            ("mnist_inference_duration_seconds", "histogram", {"model"}),
            ("mnist_http_requests_in_flight", "gauge", set()),
            ("mnist_predictions_total", "counter", {"model", "class"}),
            ("mnist_model_info", "gauge", {"model"})]
    for fam, kind, labels in want:
        if types.get(fam) != kind:
            problems.append("%s: type %s, expected %s" % (fam, types.get(fam), kind))
        elif not labels <= labels_of(fam):
            problems.append("%s: labels %s, expected at least %s" % (fam, sorted(labels_of(fam)), sorted(labels)))
    classes = {l.get("class") for n, l, _ in samples if n == "mnist_predictions_total"}
    if not {str(d) for d in range(10)} <= classes:
        problems.append("mnist_predictions_total lacks classes 0..9 (has %s)" % sorted(c for c in classes if c))
    for fam in ("mnist_http_request_duration_seconds", "mnist_inference_duration_seconds"):
        if not any(n == fam + "_bucket" and l.get("le") == "+Inf" for n, l, _ in samples):
            problems.append("%s has no +Inf bucket" % fam)
    for name, labels, value in samples:
        if name.endswith("_bucket") and "le" not in labels:
            problems.append("histogram bucket %s without le" % name)
            break
    return problems


def main(a):
    if len(a) < 3:
        sys.stderr.write(__doc__)
        return 2
    text = open(a[1], encoding="utf-8", errors="replace").read()
    if a[2] == "families":
        problems = families(text)
        for p in problems:
            print(p)
        return 1 if problems else 0
    if a[2] == "sum" and len(a) >= 4:
        want = dict(kv.split("=", 1) for kv in a[4:])
        _, samples, _ = parse(text)
        total = sum(v for n, l, v in samples
                    if n == a[3] and all(l.get(k) == val for k, val in want.items()))
        print("%g" % total)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
