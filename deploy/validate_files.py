#!/usr/bin/env python3
"""Checks of the Docker build context and the compose file, run by deploy/validate.sh.

  validate_files.py dockerignore
      every COPY source of the Dockerfiles (Dockerfile, Dockerfile.cuda; build-arg defaults
      filled in) exists and is not excluded by .dockerignore, which would only show at
      `docker build`; every file or directory the baked deploy/docker/gateway.yaml reads is a
      COPY destination.
  validate_files.py gateway-config CONFIG
      every path the container reads or writes is set and absolute (a relative one resolves
      against the image's WORKDIR, /var/lib/edge-gateway, where none of it is); prints, one a
      line, the EDGE_GATEWAY__* overrides that map the image's baked exemplar and prompt
      directories to their repository copies, for `edge-gateway check-config`.
  validate_files.py cuda-config
      the CUDA image's deploy/docker/gateway-cuda.yaml equals deploy/docker/gateway.yaml but
      for model.path and model.execution_providers (which must start with cuda), so the two
      images cannot drift apart.
  validate_files.py compose < `docker-compose config --format json` output
      bind-mount sources exist; every service runs read-only, without capabilities, with
      no-new-privileges and a memory limit; the gateway gets its keys (API, cloud, audit) and a
      health check, policies and prompts as read-only directories, trusted package keys only
      when set; the local "cloud" is only in the `cloud` profile.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def dockerignore_patterns() -> list[tuple[bool, str]]:
    """(negated, pattern) in file order; the last matching pattern decides."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def excluded(path: str, patterns: list[tuple[bool, str]]) -> bool:
    result = False
    parts = path.split("/")
    for negated, pattern in patterns:
        # A pattern matching a parent directory matches everything below it.
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            result = not negated
    return result


DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")


def copy_instructions(dockerfile: str = "Dockerfile") -> list[tuple[list[str], str]]:
    """(sources, destination) of COPY/ADD instructions that read the build context."""
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))

    def fill(word: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), word)

    out = []
    for line in text.splitlines():
        words = shlex.split(line.strip()) if re.match(r"\s*(COPY|ADD)\s", line) else []
        if not words or any(w.startswith("--from=") for w in words):
            continue
        paths = [fill(w) for w in words[1:] if not w.startswith("--")]
        out.append((paths[:-1], paths[-1]))
    return out


def copy_sources(dockerfile: str) -> list[str]:
    """Sources of COPY/ADD instructions of `dockerfile` that read the build context."""
    return [src for sources, _ in copy_instructions(dockerfile) for src in sources]


def check_baked_paths() -> list[str]:
    """What the image's own gateway.yaml reads must be baked in (a COPY destination)."""
    import yaml  # in .venv/deploy (yamllint's dependency)

    cfg = yaml.safe_load((ROOT / "deploy" / "docker" / "gateway.yaml").read_text())
    destinations = [dest.rstrip("/") for _, dest in copy_instructions()]
    wanted = {
        "model.path": cfg["model"]["path"],
        "embeddings.path": cfg["embeddings"]["path"],
        "routing.policy": cfg["routing"]["policy"],
        "routing.exemplars": cfg["routing"]["exemplars"],
        "prompts.dir": cfg["prompts"]["dir"],
    }
    problems = []
    for key, path in wanted.items():
        if not any(path == d or path.startswith(d + "/") for d in destinations):
            problems.append(f"deploy/docker/gateway.yaml {key} {path} is not baked into the image (no COPY to it)")
    return problems


def check_dockerignore() -> list[str]:
    problems = []
    patterns = dockerignore_patterns()
    count = 0
    for dockerfile in DOCKERFILES:
        sources = copy_sources(dockerfile)
        count += len(sources)
        if not sources:
            problems.append(f"found no COPY instructions in {dockerfile}")
        for src in sources:
            if "$" in src:
                problems.append(f"{dockerfile}: COPY {src}: unresolved build argument")
                continue
            if not (ROOT / src).exists():
                problems.append(f"{dockerfile}: COPY {src}: no such file in the repository")
            if excluded(src, patterns):
                problems.append(f"{dockerfile}: COPY {src}: excluded from the build context by .dockerignore")
    for heavy in ("target", ".git", ".venv", ".ort", ".cache", ".bench", "data"):
        if not excluded(heavy, patterns):
            problems.append(f".dockerignore lets {heavy}/ into the build context")
    problems += check_baked_paths()
    print(f"  dockerignore: {count} COPY sources of {', '.join(DOCKERFILES)} in the build context;"
          " heavy folders kept out; the baked config's model, embeddings, policy, exemplars and"
          " prompts are COPY destinations")
    return problems


def check_cuda_config() -> list[str]:
    import yaml

    cpu = yaml.safe_load((ROOT / "deploy/docker/gateway.yaml").read_text())
    cuda = yaml.safe_load((ROOT / "deploy/docker/gateway-cuda.yaml").read_text())
    problems = []
    providers = cuda.get("model", {}).pop("execution_providers", None) or []
    first = providers[0] if providers else None
    kind = first.get("kind") if isinstance(first, dict) else first
    if kind != "cuda":
        problems.append(f"gateway-cuda.yaml: model.execution_providers must start with cuda, not {first!r}")
    if providers[-1:] != ["cpu"]:
        problems.append("gateway-cuda.yaml: model.execution_providers should end with cpu (fallback)")
    for config in (cpu, cuda):
        config.get("model", {}).pop("path", None)
    if cpu != cuda:
        problems.append("gateway-cuda.yaml differs from gateway.yaml beyond model.path and "
                        "model.execution_providers")
    print(f"  cuda-config: providers {providers}; the rest equals gateway.yaml")
    return problems


def check_compose(config: dict) -> list[str]:
    problems = []
    services = config.get("services", {})
    for required in ("gateway", "prometheus", "cloud"):
        if required not in services:
            problems.append(f"service {required} missing")
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            if vol.get("type") == "bind" and not Path(vol["source"]).exists():
                problems.append(f"{name}: bind source {vol['source']} does not exist")
        if not svc.get("read_only"):
            problems.append(f"{name}: root filesystem is writable (read_only: true)")
        if "ALL" not in svc.get("cap_drop", []):
            problems.append(f"{name}: capabilities not dropped (cap_drop: [ALL])")
        if not any("no-new-privileges" in o for o in svc.get("security_opt", [])):
            problems.append(f"{name}: no-new-privileges not set")
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        if not limits.get("memory"):
            problems.append(f"{name}: no memory limit")
    gateway = services.get("gateway", {})
    env = gateway.get("environment", {})
    for key in ("EDGE_GATEWAY_API_KEY", "EDGE_GATEWAY_ADMIN_KEY", "EDGE_GATEWAY_CLOUD_API_KEY",
                "EDGE_GATEWAY_AUDIT_KEY"):
        if len(env.get(key) or "") < 16:
            problems.append(f"gateway: {key} missing or shorter than 16 characters")
    # Unset in env.example: it must then stay unset in the container (null), since a set but
    # empty variable is a key list the gateway cannot parse.
    if "EDGE_GATEWAY_TRUSTED_KEYS" not in env:
        problems.append("gateway: EDGE_GATEWAY_TRUSTED_KEYS is not passed through")
    elif env["EDGE_GATEWAY_TRUSTED_KEYS"] == "":
        problems.append("gateway: EDGE_GATEWAY_TRUSTED_KEYS is set but empty when .env has none")
    if "healthcheck" not in gateway or "/readyz" not in " ".join(gateway["healthcheck"].get("test", [])):
        problems.append("gateway: no health check on /readyz")
    targets = {v.get("target"): v for v in gateway.get("volumes", [])}
    policies = targets.get("/etc/edge-gateway/policies")
    if not policies or not Path(policies.get("source", "")).is_dir():
        problems.append("gateway: policies must be a mounted directory (hot reload follows renames)")
    prompts = targets.get("/etc/edge-gateway/prompts")
    if not prompts or not Path(prompts.get("source", "")).is_dir() or not prompts.get("read_only"):
        problems.append("gateway: prompts must be a read-only directory mount at /etc/edge-gateway/prompts")
    elif not list(Path(prompts["source"]).glob("*/*.yaml")):
        problems.append(f"gateway: {prompts['source']} holds no <name>/<version>.yaml prompt")
    for writable in ("/var/lib/edge-gateway", "/var/cache/edge-gateway"):
        if writable not in targets:
            problems.append(f"gateway: {writable} has no volume (the root filesystem is read-only)")
    cloud = services.get("cloud", {})
    if cloud and cloud.get("profiles") != ["cloud"]:
        problems.append("cloud: must be in the `cloud` profile only")
    if cloud and cloud.get("environment", {}).get("EDGE_GATEWAY_API_KEY") != env.get(
        "EDGE_GATEWAY_CLOUD_API_KEY"
    ):
        problems.append("cloud: does not accept the key the gateway sends")
    print(f"  compose: {len(services)} services checked ({', '.join(sorted(services))})")
    return problems


# Directories baked into the image from the repository (Dockerfile COPY lines).
BAKED = {"/etc/edge-gateway/exemplars": "policies/exemplars", "/etc/edge-gateway/prompts": "prompts"}


def check_gateway_config(path: str) -> list[str]:
    import yaml  # in .venv/deploy (yamllint's dependency)

    cfg = yaml.safe_load(Path(path).read_text()) or {}

    def get(dotted: str):
        node = cfg
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    used = ["model.path", "routing.policy", "review.db_path", "prompts.dir"]
    if get("embeddings.enabled") is not False:
        used += ["embeddings.path"]
        if get("routing.scorer") != "heuristic":
            used += ["routing.exemplars", "routing.exemplar_cache_dir"]
    if get("cache.optimized_graph_dir") != "":
        used += ["cache.optimized_graph_dir"]
    # Default to the review database's directory when unset.
    used += [k for k in ("audit.dir", "governance.model_state_path") if get(k) is not None]
    problems = []
    for key in used:
        value = get(key)
        if not isinstance(value, str) or not value.startswith("/"):
            problems.append(f"{path}: {key} is {value!r}; the container needs an absolute path "
                            "(relative ones resolve against /var/lib/edge-gateway)")
    for key, env in (("routing.exemplars", "EDGE_GATEWAY__ROUTING__EXEMPLARS"),
                     ("prompts.dir", "EDGE_GATEWAY__PROMPTS__DIR")):
        if get(key) in BAKED:
            print(f"{env}={ROOT / BAKED[get(key)]}")
    return problems


def main() -> int:
    modes = ("dockerignore", "compose", "gateway-config", "cuda-config")
    if len(sys.argv) < 2 or sys.argv[1] not in modes or (sys.argv[1] == "gateway-config") != (len(sys.argv) == 3):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "dockerignore":
        problems = check_dockerignore()
    elif sys.argv[1] == "gateway-config":
        problems = check_gateway_config(sys.argv[2])
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        return 1 if problems else 0
    elif sys.argv[1] == "cuda-config":
        problems = check_cuda_config()
    else:
        problems = check_compose(json.load(sys.stdin))
    for p in problems:
        print(f"  FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
