#!/usr/bin/env python3
"""Checks of the Helm chart in helm/edge-gateway, run by deploy/validate.sh in .venv/deploy.

For the default values and every example in deploy/helm/*.yaml:
  - values.schema.json accepts the values, by Helm's own validator (the Helm v4 Go SDK through
    helm-python-sdk) and by Python's jsonschema (Draft 7, the dialect Helm 3 reads too);
  - `helm lint --strict` finds nothing;
  - Helm renders the chart, and every manifest validates against the Kubernetes OpenAPI schemas
    (kubernetes-validate, strict: unknown fields are errors) of each version in K8S_VERSIONS;
  - the rendered objects agree with each other and with the gateway (selectors, names, secret
    keys, mounts, the env vars gateway.yaml names, probes, non-root; prompts laid out as
    <name>/<version>.yaml on a directory mount; review database, model state and audit log on
    the writable data volume, no audit directory shared by two pods; the signature init
    container running `edge-gateway model verify` with the trusted keys);
  - with --gateway-bin, `edge-gateway check-config` accepts the rendered gateway.yaml, policy and
    prompts (laid out as the kubelet lays out the ConfigMap volume), given the env vars the pod
    gets; with signatures required, against a copy of the model package signed with a key made
    for the check, which the init container's command must also accept.
The chart's files/policies/ and files/prompts/ must hold the repository's policies and prompts.
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
import shutil
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
PROMPTS_DIR = "/etc/edge-gateway/prompts"
DATA_DIR = "/var/lib/edge-gateway"
VERIFY_COMMAND = ["/usr/local/bin/edge-gateway", "model", "verify", "--pubkey-env"]


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
    # Secrets the values name and the operator creates.
    existing = {
        ("Secret", merged["auth"].get("existingSecret")),
        ("Secret", merged["governance"]["trustedKeysSecret"].get("name")),
        ("Secret", merged["audit"]["keySecret"].get("name")),
        ("Secret", merged["audit"]["sink"]["tokenSecret"].get("name")),
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
    for c in containers:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if not ref:
                continue
            problems.check(case, exists("Secret", ref["name"]),
                           f"{c['name']}: env {e['name']}: no Secret {ref['name']}")
            made = by_kind_name.get(("Secret", ref["name"]))
            if made is not None:
                problems.check(case, ref["key"] in made.get("data", {}),
                               f"{c['name']}: env {e['name']}: Secret {ref['name']} has no key {ref['key']}")

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
    governance = cfg.get("governance") or {}
    audit = cfg.get("audit") or {}
    secret_envs = {
        "governance.trusted_keys_env": governance.get("trusted_keys_env"),
        "audit.key_env": audit.get("key_env") if audit.get("enabled", True) else None,
        "audit.sink.token_env": (audit.get("sink") or {}).get("token_env"),
    }
    for key, var in secret_envs.items():
        if var:
            problems.check(case, "secretKeyRef" in env.get(var, {}).get("valueFrom", {}),
                           f"{key}: the pod does not set {var} from a Secret")
    problems.check(case, not governance.get("require_signed") or bool(governance.get("trusted_keys_env")),
                   "governance.require_signed without governance.trusted_keys_env: no key to trust")
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
    # Model state and the audit log belong on the persistent data volume, beside the reviews.
    audit_dir = env.get("EDGE_GATEWAY__AUDIT__DIR", {}).get("value") or audit.get("dir")
    for key, path in (("governance.model_state_path", governance.get("model_state_path")),
                      ("audit.dir", audit_dir if audit.get("enabled", True) else None)):
        if path is None:
            continue
        m = mounted_at(path)
        problems.check(case, m is not None and m is db_mount and path.startswith(DATA_DIR + "/"),
                       f"{key} {path} is not on the data volume at {DATA_DIR}")
    if audit.get("enabled", True):
        check_audit_dir_per_pod(case, workload, merged, env, audit_dir or "", problems)
    check_prompts_mount(case, cfg, spec, mounts, config_maps, problems)
    check_verify_container(case, merged, cfg, spec, container, problems)
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
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    problems.check(case, "checksum/prompts" in annotations,
                   "no checksum/prompts annotation: a prompt change would not reach the pods")
    prompts_cm = next((cm for cm in config_maps if cm["metadata"]["name"].endswith("-prompts")), None)
    verify = next((c for c in spec.get("initContainers", []) if c["name"] == "verify-model"), None)
    return {"config": cfg, "policies": policies_cm, "prompts": prompts_cm,
            "prompt_items": prompt_items(spec), "verify": verify}


def prompt_items(spec: dict) -> list[dict]:
    volume = next((v for v in spec["volumes"] if v["name"] == "prompts"), {})
    return volume.get("configMap", {}).get("items", [])


def check_audit_dir_per_pod(case: str, workload: dict, merged: dict, env: dict, audit_dir: str,
                            problems: Problems) -> None:
    """One writer per audit directory: pods that can share a data directory need their own."""
    data = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "data")
    if workload["kind"] == "Deployment" and "hostPath" in data:
        # Replicas on one node, or the surge pod of a rolling update beside the old one.
        pod_name = env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        names = list(env)
        problems.check(case, pod_name == "metadata.name" and "$(POD_NAME)" in audit_dir
                       and names.index("POD_NAME") < names.index("EDGE_GATEWAY__AUDIT__DIR"),
                       "Deployment on a hostPath: pods sharing a node would share one audit "
                       f"directory ({audit_dir}); it must include $(POD_NAME)")
    if workload["kind"] == "DaemonSet" and "hostPath" in data:
        surge = (merged.get("updateStrategy") or {}).get("rollingUpdate", {}).get("maxSurge")
        problems.check(case, surge in (None, 0, "0", "0%"),
                       "DaemonSet on a hostPath with maxSurge: old and new pod would share the "
                       "node's audit directory")


def check_prompts_mount(case: str, cfg: dict, spec: dict, mounts: dict, config_maps: list[dict],
                        problems: Problems) -> None:
    """prompts.dir is the prompts ConfigMap, laid out as <name>/<version>.yaml."""
    prompts_dir = (cfg.get("prompts") or {}).get("dir")
    problems.check(case, prompts_dir == PROMPTS_DIR, f"prompts.dir is {prompts_dir}, not {PROMPTS_DIR}")
    mount = mounts.get(PROMPTS_DIR)
    problems.check(case, mount is not None and mount["name"] == "prompts" and "subPath" not in mount
                   and mount.get("readOnly"), f"prompts volume not mounted read-only as a directory at {PROMPTS_DIR}")
    volume = next((v for v in spec["volumes"] if v["name"] == "prompts"), None)
    cm = next((c for c in config_maps if volume and c["metadata"]["name"] == volume["configMap"]["name"]), None)
    problems.check(case, cm is not None, "no prompts ConfigMap behind the prompts volume")
    if cm is None:
        return
    items = prompt_items(spec)
    data = cm.get("data") or {}
    problems.check(case, sorted(i["key"] for i in items) == sorted(data),
                   f"prompts volume items {sorted(i['key'] for i in items)} are not the ConfigMap's keys {sorted(data)}")
    for item in items:
        parts = item["path"].split("/")
        problems.check(case, len(parts) == 2 and parts[1].endswith(".yaml") and not parts[0].startswith("."),
                       f"prompts item {item['key']} -> {item['path']} is not <name>/<version>.yaml")
    defaults = (cfg.get("prompts") or {}).get("defaults") or {}
    paths = {i["path"] for i in items}
    for name, version in defaults.items():
        problems.check(case, f"{name}/{version}.yaml" in paths,
                       f"prompts.defaults.{name}: {name}/{version}.yaml is not mounted")


def check_verify_container(case: str, merged: dict, cfg: dict, spec: dict, container: dict,
                           problems: Problems) -> None:
    """model.verify mode signature: `edge-gateway model verify` with the trusted keys."""
    verify = merged["model"]["verify"]
    if not verify.get("enabled") or verify.get("mode") != "signature":
        return
    init = next((c for c in spec.get("initContainers", []) if c["name"] == "verify-model"), None)
    problems.check(case, init is not None, "model.verify mode signature: no verify-model init container")
    if init is None:
        return
    command = init.get("command", [])
    problems.check(case, command[:4] == VERIFY_COMMAND and command[5:] == ["$(MODEL_DIR)"]
                   and not init.get("args"),
                   f"verify-model runs {command + init.get('args', [])}, not "
                   "`edge-gateway model verify --pubkey-env VAR $(MODEL_DIR)`")
    init_env = {e["name"]: e for e in init.get("env", [])}
    var = command[4] if len(command) > 4 else ""
    problems.check(case, init_env.get(var, {}).get("valueFrom", {}).get("secretKeyRef") ==
                   {"name": merged["governance"]["trustedKeysSecret"]["name"],
                    "key": merged["governance"]["trustedKeysSecret"]["key"]},
                   f"verify-model: {var} is not the trusted keys of governance.trustedKeysSecret")
    problems.check(case, init_env.get("MODEL_DIR", {}).get("value") == cfg["model"]["path"],
                   f"verify-model checks {init_env.get('MODEL_DIR', {}).get('value')}, the gateway "
                   f"loads {cfg['model']['path']}")
    if not verify["image"].get("repository"):
        problems.check(case, init["image"] == container["image"], "verify-model does not run the gateway image")
    mounts = {m["mountPath"] for m in init.get("volumeMounts", [])}
    if merged["model"]["source"] != "image":
        problems.check(case, "/models" in mounts, "verify-model does not see the model volume")


def lay_out_configmap_volume(target: Path, data: dict, items: list[dict]) -> None:
    """Writes a ConfigMap volume as the kubelet does: the files in a hidden timestamped
    directory, `..data` pointing at it, and each top-level entry a symlink through `..data`."""
    stamp = target / "..2025_01_01_00_00_00.000000001"
    for item in items:
        path = stamp / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[item["key"]])
    (target / "..data").symlink_to(stamp.name)
    for top in sorted({item["path"].split("/")[0] for item in items}):
        (target / top).symlink_to(f"..data/{top}")


class Signing:
    """A release key made for this run, and package copies signed with it."""

    def __init__(self, gateway_bin: str, tmp: Path) -> None:
        self.bin, self.tmp = gateway_bin, tmp
        subprocess.run([gateway_bin, "model", "keygen", "--out", str(tmp / "check-release")],
                       check=True, capture_output=True, text=True)
        self.key = tmp / "check-release.key"
        self.public = (tmp / "check-release.pub").read_text()
        self.signed: dict[str, Path] = {}

    def signed_copy(self, model_dir: str) -> Path | None:
        """A signed copy of the repository's package named like the pod's model directory."""
        name = Path(model_dir).name
        if name not in self.signed:
            source = ROOT / "onnx" / "models" / name
            if not source.is_dir():
                return None
            copy_dir = self.tmp / "signed" / name
            shutil.copytree(source, copy_dir)
            subprocess.run([self.bin, "model", "sign", "--key", str(self.key), "--version",
                            "0.0.0-check", str(copy_dir)], check=True, capture_output=True, text=True)
            self.signed[name] = copy_dir
        return self.signed[name]


def shipped_prompts(root: Path) -> dict[str, str]:
    """<name>/<version>.yaml -> text under root (following a symlinked root)."""
    out = {}
    for name_dir in sorted(root.resolve().iterdir()):
        if name_dir.is_dir():
            for f in sorted(name_dir.glob("*.yaml")):
                out[f"{name_dir.name}/{f.name}"] = f.read_text()
    return out


def check_config(case: str, gateway_bin: str, found: dict, signing: Signing,
                 problems: Problems) -> str:
    """Runs the real gateway's check-config on the rendered gateway.yaml, policy and prompts,
    with the environment the pod gets (dummy secrets, the run's public key). Returns what
    passed, for the report."""
    cfg = copy.deepcopy(found["config"])
    policies_cm = found["policies"]
    governance = cfg.get("governance") or {}
    audit = cfg.get("audit") or {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_GATEWAY")}
        for i, key in enumerate(cfg["auth"]["keys"]):
            env[key["key_env"]] = f"check-config-dummy-key-{i:04d}"
        if audit.get("key_env"):
            env[audit["key_env"]] = "check-config-dummy-audit-key"
        if (audit.get("sink") or {}).get("token_env"):
            env[audit["sink"]["token_env"]] = "check-config-dummy-sink-token"
        if governance.get("trusted_keys_env"):
            env[governance["trusted_keys_env"]] = signing.public
        if policies_cm is not None:
            name = Path(cfg["routing"]["policy"]).name
            local_policy = Path(tmp) / name
            local_policy.write_text(policies_cm["data"][name])
            # The file the pod reads at /etc/edge-gateway/policies/<name>, placed here.
            env["EDGE_GATEWAY__ROUTING__POLICY"] = str(local_policy)
        items = found["prompt_items"]
        if found["prompts"] is not None:
            prompts_dir = Path(tmp) / "prompts"
            prompts_dir.mkdir()
            lay_out_configmap_volume(prompts_dir, found["prompts"].get("data") or {}, items)
            env["EDGE_GATEWAY__PROMPTS__DIR"] = str(prompts_dir)
        # The image bakes the exemplars at /etc/edge-gateway/exemplars from policies/exemplars.
        if cfg.get("routing", {}).get("exemplars") == "/etc/edge-gateway/exemplars":
            env["EDGE_GATEWAY__ROUTING__EXEMPLARS"] = str(ROOT / "policies" / "exemplars")
        verify = found["verify"]
        signature_init = verify is not None and verify.get("command", [])[:4] == VERIFY_COMMAND
        signed = None
        if governance.get("require_signed") or signature_init:
            signed = signing.signed_copy(cfg["model"]["path"])
            if signed is None:
                problems.add(case, f"signed packages: no onnx/models/{Path(cfg['model']['path']).name} "
                             "to sign a copy of for check-config")
                return "check-config not run"
            env["EDGE_GATEWAY__MODEL__PATH"] = str(signed)
        config_file = Path(tmp) / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(cfg))
        # From an empty directory: relative defaults must not find this repository's files.
        result = subprocess.run(
            [gateway_bin, "check-config", "--config", str(config_file)],
            env=env, capture_output=True, text=True, check=False, cwd=tmp,
        )
        problems.check(case, result.returncode == 0,
                       f"edge-gateway check-config: {(result.stderr or result.stdout).strip()}")
        if result.returncode != 0:
            return "check-config FAILED"
        passed = [f"check-config OK ({len(items)} prompts"]
        problems.check(case, f"prompts OK: {len(items)} version(s)" in result.stdout,
                       f"check-config did not load the {len(items)} mounted prompts: {result.stdout.strip()}")
        if governance.get("require_signed"):
            problems.check(case, "OK: version 0.0.0-check" in result.stdout,
                           f"check-config did not verify the signed package: {result.stdout.strip()}")
            passed.append("signatures required, signed copy verified")
        if signature_init and signed is not None:
            # The init container's own command, the binary and package paths mapped here.
            init_env = {**env, "MODEL_DIR": str(signed)}
            command = [gateway_bin] + [str(signed) if a == "$(MODEL_DIR)" else a
                                       for a in verify["command"][1:]]
            var = verify["command"][4]
            init_env[var] = signing.public
            run = subprocess.run(command, env=init_env, capture_output=True, text=True, check=False)
            problems.check(case, run.returncode == 0,
                           f"verify-model command failed on a signed package: {(run.stderr or run.stdout).strip()}")
            passed.append("verify-model command accepts it")
        return ", ".join(passed) + ")"


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
    if args.gateway_bin:
        args.gateway_bin = str(Path(args.gateway_bin).resolve())
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    problems = Problems()
    schema = check_schema_file(problems)

    # A symlink to policies/default.yaml; Helm reads (and `helm package` stores) its content.
    shipped = (CHART / "files" / "policies" / "default.yaml").read_text()
    problems.check("chart", shipped == (ROOT / "policies" / "default.yaml").read_text(),
                   "helm/edge-gateway/files/policies/default.yaml is not policies/default.yaml")
    # files/prompts is a symlink to prompts/ (every version, present and future).
    repo_prompts = shipped_prompts(ROOT / "prompts")
    problems.check("chart", shipped_prompts(CHART / "files" / "prompts") == repo_prompts,
                   "helm/edge-gateway/files/prompts/ does not hold the files of prompts/")
    problems.check("chart", bool(repo_prompts), "prompts/ holds no <name>/<version>.yaml")

    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    cargo_version = next(
        line.split('"')[1] for line in (ROOT / "Cargo.toml").read_text().splitlines()
        if line.startswith("version = ")
    )
    problems.check("chart", str(app_version) == cargo_version,
                   f"Chart.yaml appVersion {app_version} is not the gateway's version {cargo_version} "
                   "(Cargo.toml): the default image tag would be wrong")

    signing_dir = tempfile.TemporaryDirectory()
    signing = Signing(args.gateway_bin, Path(signing_dir.name)) if args.gateway_bin else None
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
        if case == "default" and found.get("prompts") is not None:
            data = found["prompts"].get("data") or {}
            mounted = {i["path"]: data.get(i["key"]) for i in found["prompt_items"]}
            problems.check(case, mounted == repo_prompts,
                           "rendered prompts (as the pod sees them) differ from prompts/")
        checked = ""
        if signing is not None and found:
            checked = "; " + check_config(case, args.gateway_bin, found, signing, problems)
        kinds = sorted({o["kind"] for o in objects})
        print(f"  chart[{case}]: {len(objects)} objects ({', '.join(kinds)}){checked}")

    invalid = check_invalid(schema, problems)
    print(f"  chart: {len(cases)} value sets rendered and validated against Kubernetes "
          f"{', '.join(K8S_VERSIONS)}; {invalid} invalid value sets rejected")
    if crd_skipped:
        print(f"  chart: not schema-checked (CRD, no schema shipped): {', '.join(sorted(crd_skipped))}")
    if not args.gateway_bin:
        print("  chart: SKIPPED check-config of rendered gateway.yaml (no edge-gateway binary)")
    signing_dir.cleanup()
    for p in problems.items:
        print(f"  FAIL {p}")
    return 1 if problems.items else 0


if __name__ == "__main__":
    sys.exit(main())
