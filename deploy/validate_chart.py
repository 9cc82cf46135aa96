#!/usr/bin/env python3
"""Checks of the Helm chart in helm/edge-gateway, run by deploy/validate.sh in .venv/deploy.

For the default values and every example in deploy/helm/*.yaml:
  - values.schema.json accepts the values, by Helm's own validator (the Helm v4 Go SDK through
    helm-python-sdk) and by Python's jsonschema (Draft 7, the dialect Helm 3 reads too);
  - `helm lint --strict` finds nothing;
  - Helm renders the chart, and every manifest validates against the Kubernetes OpenAPI schemas
    (kubernetes-validate, strict: unknown fields are errors) of each version in K8S_VERSIONS;
  - the rendered objects agree with each other and with the gateway (selectors, names, secret
    keys, mounts, the env vars gateway.yaml names, probes, non-root);
  - with --gateway-bin, `edge-gateway check-config` accepts the rendered gateway.yaml and policy.
Every file in deploy/helm/invalid/ must be rejected at the stage, and with the error text, that
its `# expect:` line names.
Rendered manifests are written to OUT_DIR/<case>.yaml.

usage: validate_chart.py [--gateway-bin PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "edge-gateway"
EXAMPLES = ROOT / "deploy" / "helm"
INVALID = EXAMPLES / "invalid"
RELEASE, NAMESPACE = "edge", "factory"
# Oldest version the chart claims (Chart.yaml kubeVersion), and current k3s releases.
K8S_VERSIONS = ["1.25.0", "1.31.0", "1.34.0"]
# Kinds whose schema is a CRD that kubernetes-validate does not ship.
CRD_KINDS = {"ServiceMonitor"}


class Problems:
    """Collects failures so one run reports all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, case: str, message: str) -> None:
        self.items.append(f"[{case}] {message}")

    def check(self, case: str, ok: bool, message: str) -> None:
        if not ok:
            self.add(case, message)


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict) -> dict[str, list[dict]]:
    """Helm render; returns template path -> parsed objects (NOTES.txt left out)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    out: dict[str, list[dict]] = {}
    for name, text in sorted(manifests.items()):
        if name.endswith("NOTES.txt"):
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if docs:
            out[name] = docs
    return out


def merged_values(values: dict) -> dict:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def find(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind]


def check_schema_file(problems: Problems) -> dict:
    schema = json.loads((CHART / "values.schema.json").read_text())
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        problems.add("schema", f"values.schema.json is not a valid Draft 7 schema: {e.message}")
    return schema


def validate_values(case: str, values: dict, schema: dict, problems: Problems) -> bool:
    ok = True
    try:
        with helm.Chart.load(CHART) as chart:
            chart.validate_schema(values)
    except helm.HelmError as e:
        problems.add(case, "Helm rejects the values: " + " ".join(str(e).split()))
        ok = False
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(merged_values(values)), key=str
    )
    for e in errors:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        problems.add(case, f"jsonschema: {where}: {e.message}")
        ok = False
    return ok


def lint(case: str, values: dict, problems: Problems) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            problems.add(case, f"helm lint: {message.get('path')}: {message.get('error')}")
    for error in report.get("errors") or []:
        problems.add(case, f"helm lint: {error}")


def kube_validate(case: str, objects: list[dict], problems: Problems) -> list[str]:
    skipped = []
    for obj in objects:
        kn = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CRD_KINDS:
            skipped.append(kn)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.add(case, f"{kn} invalid for Kubernetes {version}: {path}: {e.message}")
            except SchemaNotFoundError:
                problems.add(case, f"{kn}: no Kubernetes {version} schema for {obj['apiVersion']}")
    return skipped


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def gateway_container(workload: dict) -> dict:
    return next(c for c in pod_spec(workload)["containers"] if c["name"] == "gateway")


def cross_check(case: str, values: dict, objects: list[dict], problems: Problems) -> dict:
    """Consistency the schemas cannot see. Returns gateway.yaml parsed (for check-config)."""
    merged = merged_values(values)
    workloads = find(objects, "Deployment") + find(objects, "DaemonSet")
    problems.check(case, len(workloads) == 1, f"expected one workload, got {len(workloads)}")
    if len(workloads) != 1:
        return {}
    workload = workloads[0]
    problems.check(case, workload["kind"] == merged["kind"], f"workload kind is {workload['kind']}")
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    selector = workload["spec"]["selector"]["matchLabels"]
    problems.check(case, selector.items() <= pod_labels.items(), "workload selector misses its pods")
    for svc in find(objects, "Service"):
        problems.check(case, svc["spec"]["selector"].items() <= pod_labels.items(),
                       f"Service {svc['metadata']['name']} selects no gateway pod")
        for port in svc["spec"]["ports"]:
            names = {p["name"] for p in gateway_container(workload)["ports"]}
            problems.check(case, port["targetPort"] in names,
                           f"Service targetPort {port['targetPort']} is not a container port")
    for pdb in find(objects, "PodDisruptionBudget"):
        problems.check(case, pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(),
                       "PodDisruptionBudget selects no gateway pod")
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        problems.check(case, (ref["kind"], ref["name"]) ==
                       (workload["kind"], workload["metadata"]["name"]),
                       "HorizontalPodAutoscaler targets another workload")
        problems.check(case, "replicas" not in workload["spec"],
                       "Deployment sets replicas although an HPA owns them")
    for sm in find(objects, "ServiceMonitor"):
        svc_labels = find(objects, "Service")[0]["metadata"]["labels"]
        problems.check(case, sm["spec"]["selector"]["matchLabels"].items() <= svc_labels.items(),
                       "ServiceMonitor selects no Service")

    spec = pod_spec(workload)
    container = gateway_container(workload)
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    existing = {
        ("Secret", merged["auth"].get("existingSecret")),
        ("ConfigMap", merged["policies"].get("existingConfigMap")),
        ("PersistentVolumeClaim", merged["persistence"].get("existingClaim")),
        ("PersistentVolumeClaim", merged["model"]["pvc"].get("existingClaim")),
    } | {("Secret", u["secretName"]) for u in merged.get("upstreamApiKeys") or []}

    def exists(kind: str, name: str) -> bool:
        return (kind, name) in by_kind_name or (kind, name) in existing

    volumes = {v["name"]: v for v in spec["volumes"]}
    for v in spec["volumes"]:
        if "configMap" in v:
            problems.check(case, exists("ConfigMap", v["configMap"]["name"]),
                           f"volume {v['name']}: no ConfigMap {v['configMap']['name']}")
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            problems.check(case, exists("PersistentVolumeClaim", claim),
                           f"volume {v['name']}: no PersistentVolumeClaim {claim}")
    containers = spec.get("initContainers", []) + spec["containers"]
    for c in containers:
        for m in c.get("volumeMounts", []):
            problems.check(case, m["name"] in volumes,
                           f"container {c['name']} mounts unknown volume {m['name']}")
    env = {e["name"]: e for e in container.get("env", [])}
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            continue
        problems.check(case, exists("Secret", ref["name"]), f"env {e['name']}: no Secret {ref['name']}")
        made = by_kind_name.get(("Secret", ref["name"]))
        if made is not None:
            problems.check(case, ref["key"] in made.get("data", {}),
                           f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}")

    # The gateway's view: gateway.yaml and what the pod gives it.
    config_maps = find(objects, "ConfigMap")
    gateway_cm = next((cm for cm in config_maps if "gateway.yaml" in cm.get("data", {})), None)
    problems.check(case, gateway_cm is not None, "no ConfigMap with gateway.yaml")
    if gateway_cm is None:
        return {}
    cfg = yaml.safe_load(gateway_cm["data"]["gateway.yaml"])
    port = container["ports"][0]["containerPort"]
    problems.check(case, cfg["server"]["listen"] == f"0.0.0.0:{port}",
                   f"server.listen {cfg['server']['listen']} is not the container port {port}")
    for key in cfg["auth"]["keys"]:
        problems.check(case, key["key_env"] in env,
                       f"auth key {key['name']}: the pod does not set {key['key_env']}")
    problems.check(case, len(cfg["auth"]["keys"]) >= 1, "no API keys: the gateway would refuse to bind")
    for name, upstream in (cfg.get("upstreams") or {}).items():
        var = upstream.get("api_key_env")
        if var and merged.get("upstreamApiKeys"):
            problems.check(case, var in env, f"upstream {name}: the pod does not set {var}")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    def mounted_at(path: str) -> dict | None:
        best = None
        for mount_path, m in mounts.items():
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                if best is None or len(mount_path) > len(best["mountPath"]):
                    best = m
        return best

    db_mount = mounted_at(cfg["review"]["db_path"])
    problems.check(case, db_mount is not None and not db_mount.get("readOnly"),
                   "review.db_path is not on a writable volume (the root filesystem is read-only)")
    graph_dir = cfg["cache"].get("optimized_graph_dir")
    if graph_dir:
        m = mounted_at(graph_dir)
        problems.check(case, m is not None and not m.get("readOnly"),
                       "cache.optimized_graph_dir is not on a writable volume")
    policy_path = cfg["routing"]["policy"]
    policy_mount = mounted_at(policy_path)
    problems.check(case, policy_mount is not None and "subPath" not in policy_mount,
                   "the policy is not on a directory mount (subPath mounts never update: no hot reload)")
    policies_cm = next((cm for cm in config_maps if cm["metadata"]["name"].endswith("-policies")), None)
    if not merged["policies"].get("existingConfigMap"):
        problems.check(case, policies_cm is not None and
                       Path(policy_path).name in policies_cm.get("data", {}),
                       f"routing.policy {policy_path} is not in the policies ConfigMap")
    if merged["model"]["source"] != "image":
        problems.check(case, mounted_at(cfg["model"]["path"]) is not None,
                       f"model.path {cfg['model']['path']} is not on a mounted volume")
    probes = {p: container.get(p, {}).get("httpGet", {}).get("path")
              for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    problems.check(case, probes["livenessProbe"] == "/healthz", f"liveness probe {probes['livenessProbe']}")
    problems.check(case, probes["readinessProbe"] == "/readyz", f"readiness probe {probes['readinessProbe']}")
    problems.check(case, spec["securityContext"].get("runAsNonRoot") is True, "pod may run as root")
    problems.check(case, container["securityContext"].get("readOnlyRootFilesystem") is True,
                   "gateway root filesystem is writable")
    problems.check(case, "memory" in container.get("resources", {}).get("limits", {}),
                   "gateway has no memory limit")
    threads = cfg.get("runtime", {}).get("intra_threads")
    problems.check(case, isinstance(threads, int) and threads >= 0, f"runtime.intra_threads {threads!r}")
    return {"config": cfg, "policies": policies_cm}


def check_config(case: str, gateway_bin: str, found: dict, problems: Problems) -> None:
    """Runs the real gateway's check-config on the rendered gateway.yaml and policy."""
    cfg = copy.deepcopy(found["config"])
    policies_cm = found["policies"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_GATEWAY")}
        for i, key in enumerate(cfg["auth"]["keys"]):
            env[key["key_env"]] = f"check-config-dummy-key-{i:04d}"
        if policies_cm is not None:
            name = Path(cfg["routing"]["policy"]).name
            local_policy = Path(tmp) / name
            local_policy.write_text(policies_cm["data"][name])
            # The file the pod reads at /etc/edge-gateway/policies/<name>, placed here.
            env["EDGE_GATEWAY__ROUTING__POLICY"] = str(local_policy)
        # The image bakes the exemplars at /etc/edge-gateway/exemplars from policies/exemplars.
        if cfg.get("routing", {}).get("exemplars") == "/etc/edge-gateway/exemplars":
            env["EDGE_GATEWAY__ROUTING__EXEMPLARS"] = str(ROOT / "policies" / "exemplars")
        config_file = Path(tmp) / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(cfg))
        result = subprocess.run(
            [gateway_bin, "check-config", "--config", str(config_file)],
            env=env, capture_output=True, text=True, check=False,
        )
        problems.check(case, result.returncode == 0,
                       f"edge-gateway check-config: {(result.stderr or result.stdout).strip()}")


def expectation(path: Path) -> tuple[str, str]:
    """`# expect: schema|render: <text the error must contain>` from the file's header."""
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            stage, _, needle = line.removeprefix("# expect: ").partition(": ")
            if stage in ("schema", "render") and needle:
                return stage, needle
    raise SystemExit(f"{path}: needs a line '# expect: schema|render: <error text>'")


def check_invalid(schema: dict, problems: Problems) -> int:
    count = 0
    for path in sorted(INVALID.glob("*.yaml")):
        count += 1
        case = f"invalid/{path.name}"
        stage, needle = expectation(path)
        values = load_values(path)
        helm_error = ""
        try:
            with helm.Chart.load(CHART) as chart:
                chart.validate_schema(values)
        except helm.HelmError as e:
            helm_error = str(e)
        py_errors = [
            "/".join(str(p) for p in e.absolute_path) + ": " + e.message
            for e in jsonschema.Draft7Validator(schema).iter_errors(merged_values(values))
        ]
        if stage == "schema":
            problems.check(case, needle in helm_error,
                           f"Helm's schema validation did not fail with '{needle}': {helm_error or 'accepted'}")
            problems.check(case, bool(py_errors), "jsonschema accepted it")
            continue
        problems.check(case, not helm_error and not py_errors,
                       f"rejected by the schema, expected to fail only at render: {helm_error}")
        try:
            render(values)
            problems.add(case, "rendered although it must fail")
        except helm.HelmError as e:
            problems.check(case, needle in str(e), f"render failed, but not with '{needle}': {e}")
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway-bin", help="edge-gateway binary for check-config")
    parser.add_argument("--out", default=str(ROOT / ".cache" / "deploy" / "rendered"))
    args = parser.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    problems = Problems()
    schema = check_schema_file(problems)

    # A symlink to policies/default.yaml; Helm reads (and `helm package` stores) its content.
    shipped = (CHART / "files" / "policies" / "default.yaml").read_text()
    problems.check("chart", shipped == (ROOT / "policies" / "default.yaml").read_text(),
                   "helm/edge-gateway/files/policies/default.yaml is not policies/default.yaml")

    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    cargo_version = next(
        line.split('"')[1] for line in (ROOT / "Cargo.toml").read_text().splitlines()
        if line.startswith("version = ")
    )
    problems.check("chart", str(app_version) == cargo_version,
                   f"Chart.yaml appVersion {app_version} is not the gateway's version {cargo_version} "
                   "(Cargo.toml): the default image tag would be wrong")

    cases = [("default", {})] + [
        (p.stem, load_values(p)) for p in sorted(EXAMPLES.glob("*.yaml"))
    ]
    crd_skipped: set[str] = set()
    for case, values in cases:
        if not validate_values(case, values, schema, problems):
            continue
        lint(case, values, problems)
        try:
            rendered = render(values)
        except helm.HelmError as e:
            problems.add(case, f"render failed: {e}")
            continue
        objects = [o for docs in rendered.values() for o in docs]
        with open(out_dir / f"{case}.yaml", "w") as f:
            yaml.safe_dump_all(objects, f, sort_keys=False)
        crd_skipped |= set(kube_validate(case, objects, problems))
        found = cross_check(case, values, objects, problems)
        if case == "default" and found.get("policies") is not None:
            problems.check(case, found["policies"]["data"].get("default.yaml") ==
                           (ROOT / "policies" / "default.yaml").read_text(),
                           "rendered default.yaml differs from policies/default.yaml")
        if args.gateway_bin and found:
            check_config(case, args.gateway_bin, found, problems)
        kinds = sorted({o["kind"] for o in objects})
        print(f"  chart[{case}]: {len(objects)} objects ({', '.join(kinds)})")

    invalid = check_invalid(schema, problems)
    print(f"  chart: {len(cases)} value sets rendered and validated against Kubernetes "
          f"{', '.join(K8S_VERSIONS)}; {invalid} invalid value sets rejected")
    if crd_skipped:
        print(f"  chart: not schema-checked (CRD, no schema shipped): {', '.join(sorted(crd_skipped))}")
    if not args.gateway_bin:
        print("  chart: SKIPPED check-config of rendered gateway.yaml (no edge-gateway binary)")
    for p in problems.items:
        print(f"  FAIL {p}")
    return 1 if problems.items else 0


if __name__ == "__main__":
    sys.exit(main())
