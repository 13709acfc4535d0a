#!/usr/bin/env python3
"""policy.py RENDERED.yaml HELP.txt - what the base's manifests promise,
checked on kustomize's output: one line per check, "PASS<TAB>what" or
"FAIL<TAB>what<TAB>why". HELP.txt is `mnist-server --help`; every MNIST_*
variable a ConfigMap sets must be one the server reads (a misspelt variable
would be ignored without a word), except those named with --pending."""
import re
import sys

import yaml


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--pending=")]
    pending = set()
    for a in sys.argv[1:]:
        if a.startswith("--pending="):
            pending.update(v for v in a.split("=", 1)[1].split(",") if v)
    docs = [d for d in yaml.safe_load_all(open(args[0])) if d]
    known = set(re.findall(r"\[(MNIST_[A-Z_]+)\]", open(args[1]).read()))
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def check(what, cond, why=""):
        print("PASS\t%s" % what if cond else "FAIL\t%s\t%s" % (what, why))

    def one(kind):
        objs = by_kind.get(kind, [])
        check("exactly one %s" % kind, len(objs) == 1, "found %d" % len(objs))
        return objs[0] if objs else {}

    dep = one("Deployment")
    one("Service")
    hpa = one("HorizontalPodAutoscaler")
    one("PodDisruptionBudget")
    netpol = one("NetworkPolicy")
    cms = by_kind.get("ConfigMap", [])
    check("a ConfigMap of settings", len(cms) >= 1, "none")
    env = {}
    for cm in cms:
        env.update(cm.get("data") or {})

    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    ctrs = pod.get("containers", [{}])
    c = ctrs[0]
    check("3 replicas", spec.get("replicas") == 3, spec.get("replicas"))
    check("the HPA keeps at least the Deployment's replicas",
          (hpa.get("spec", {}).get("minReplicas") or 0) >= (spec.get("replicas") or 1))
    ready = ("/v2/health/ready", "/readyz")
    for probe, want in (("startupProbe", ready), ("readinessProbe", ready),
                        ("livenessProbe", ("/healthz", "/v2/health/live"))):
        p = c.get(probe, {}).get("httpGet", {})
        ok = bool(p) and p.get("path") in want
        check("%s is an HTTP probe on %s" % (probe, " or ".join(want)), ok, p)
    res = c.get("resources", {})
    check("CPU and memory requests and limits set",
          all(res.get(k, {}).get(r) for k in ("requests", "limits") for r in ("cpu", "memory")), res)
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check("runAsNonRoot with a numeric user", psc.get("runAsNonRoot") is True and isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0)
    check("seccomp RuntimeDefault", psc.get("seccompProfile", {}).get("type") == "RuntimeDefault")
    check("read-only root filesystem", csc.get("readOnlyRootFilesystem") is True)
    check("no privilege escalation", csc.get("allowPrivilegeEscalation") is False)
    check("all capabilities dropped", csc.get("capabilities", {}).get("drop") == ["ALL"])
    tsc = pod.get("topologySpreadConstraints", [])
    check("spread across nodes", any(t.get("topologyKey") == "kubernetes.io/hostname" for t in tsc))
    ann = spec.get("template", {}).get("metadata", {}).get("annotations", {})
    check("Prometheus scrape annotations",
          ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics")
    check("settings come from the ConfigMap",
          any(e.get("configMapRef", {}).get("name") in [cm["metadata"]["name"] for cm in cms]
              for e in c.get("envFrom", [])))
    bad = sorted(k for k in env if not k.startswith("MNIST_"))
    check("the ConfigMap holds only MNIST_* variables", not bad, bad)
    unknown = sorted(k for k in env if k.startswith("MNIST_") and k not in known and k not in pending)
    check("every MNIST_* variable is one mnist-server reads", not unknown,
          "not in mnist-server --help: %s" % unknown)
    try:
        delay = float(env.get("MNIST_DRAIN_DELAY", "nan"))
        timeout = float(env.get("MNIST_DRAIN_TIMEOUT", "nan"))
    except ValueError:
        delay = timeout = float("nan")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check("terminationGracePeriodSeconds > drain delay + drain timeout",
          grace > delay + timeout, "grace %s, delay %s, timeout %s" % (grace, delay, timeout))
    port = env.get("MNIST_PORT")
    cports = [p.get("containerPort") for p in c.get("ports", [])]
    check("the container port is MNIST_PORT", port is not None and int(port) in cports, (port, cports))
    np_ports = [p.get("port") for r in netpol.get("spec", {}).get("ingress", []) for p in r.get("ports", [])]
    check("the NetworkPolicy admits only the server's port",
          port is not None and np_ports == [int(port)], np_ports)


if __name__ == "__main__":
    main()
