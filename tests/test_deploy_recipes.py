"""The recipes under deploy/ (container image, compose stack, Kubernetes manifests) cannot
be run here (no registry for base images), so this test holds them to what the code serves:
every NODAL_* setting they name exists in engine/core/settings.py, every ``nodal`` command
they run parses with the real CLI (and ``nodal <subcommand> --help`` works), and their
ports and probe paths are the ones the processes serve (a real ``nodal serve`` answers the
API probe, a real Streamlit app the apps' health check)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import httpx
import yaml

from engine.cli.main import build_parser
from engine.core.settings import Settings
from tests.e2e import procs

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SETTINGS = {f.metadata["env"] for f in fields(Settings)}
APPS = {p.parent.name for p in (REPO / "apps").glob("*/app.py")}


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _k8s() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Dockerfile stage name -> its (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            stages[current] = []
        elif current is not None:
            stages[current].append((word.upper(), rest.strip()))
    return stages


def _instruction(stage: str, name: str) -> str | None:
    found = [rest for word, rest in _stages()[stage] if word == name]
    return found[-1] if found else None


def _healthcheck_url(text: str) -> httpx.URL:
    return httpx.URL(re.search(r"https?://[^'\" ]+", text).group(0))


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _nodal_commands() -> list[list[str]]:
    """Every ``nodal`` command line the recipes run (the image's entrypoint is ``nodal``)."""
    commands = []
    for name in ("api", "runner"):
        commands.append(yaml.safe_load(_instruction(name, "CMD")))
    for service in _compose()["services"].values():
        target = (service.get("build") or {}).get("target")
        if target in ("api", "runner") and "command" in service:
            commands.append(service["command"])
    for doc in _k8s():
        if doc["kind"] == "Deployment":
            commands += [c["args"] for c in doc["spec"]["template"]["spec"]["containers"]]
    return commands


def test_every_setting_the_recipes_name_exists():
    named = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            named |= set(re.findall(r"\bNODAL_[A-Z0-9_]+\b", path.read_text()))
    assert named - SETTINGS == set()
    # The settings a stack on several hosts cannot do without.
    for needed in (
        "NODAL_CONTROL_URL",
        "NODAL_STORE_URL",
        "NODAL_STORE_ENDPOINT",
        "NODAL_STORE_ACCESS_KEY",
        "NODAL_STORE_SECRET_KEY",
        "NODAL_RUNNER_LEASE_SECONDS",
        "NODAL_RUNNER_RENEW_SECONDS",
    ):
        assert needed in named, needed


def test_every_nodal_command_the_recipes_run_parses():
    commands = _nodal_commands()
    assert {c[0] for c in commands} == {"serve", "runner"}
    parser = build_parser()
    for args in commands:
        parsed = parser.parse_args(args)  # exits (fails the test) on an unknown option
        assert parsed.infra
    for sub in sorted({c[0] for c in commands}):
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli.main", sub, "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr


def test_the_image_is_multi_stage_non_root_and_installs_the_lock():
    stages = _stages()
    assert {"build", "runtime", "api", "app", "runner"} <= set(stages)
    build = " ".join(rest for _, rest in stages["build"])
    assert "pip install -r requirements.lock" in build
    assert _instruction("runtime", "USER") not in (None, "root", "0")
    assert "COPY" in {w for w, _ in stages["runtime"]} and "--from=build" in " ".join(
        rest for w, rest in stages["runtime"] if w == "COPY"
    )


def test_the_api_probes_and_ports_agree_with_nodal_serve(tmp_path):
    cmd = yaml.safe_load(_instruction("api", "CMD"))
    port = int(_option(cmd, "--port"))
    image_probe = _healthcheck_url(_instruction("api", "HEALTHCHECK"))
    assert (image_probe.port, image_probe.path) == (port, "/isAlive/")
    assert str(port) in _instruction("api", "EXPOSE")

    compose = _compose()["services"]
    apis = [s for s in compose.values() if (s.get("build") or {}).get("target") == "api"]
    assert len(apis) >= 2
    upstream = (DEPLOY / "nginx.conf").read_text()
    for name, service in compose.items():
        if service in apis:
            p = int(_option(service["command"], "--port"))
            probe = _healthcheck_url(" ".join(service["healthcheck"]["test"]))
            assert (probe.port, probe.path) == (p, "/isAlive/")
            assert f"server {name}:{p}" in upstream
    listen = int(re.search(r"listen (\d+);", upstream).group(1))
    assert f"{listen}:{listen}" in compose["nginx"]["ports"]

    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s()}
    deployment = docs[("Deployment", "nodal-api")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    k8s_port = int(_option(container["args"], "--port"))
    assert container["ports"][0]["containerPort"] == k8s_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/isAlive/", "port": k8s_port}
    assert docs[("Service", "nodal-api")]["spec"]["ports"][0]["targetPort"] == k8s_port
    hpa = docs[("HorizontalPodAutoscaler", "nodal-api")]["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", "nodal-api")

    # The recipe's own command line (on loopback and a free port) answers its probe path.
    free = procs.free_port()
    args = [*container["args"]]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(free)
    env = {"NODAL_HOME": str(tmp_path / "home")}
    log = tmp_path / "serve.log"
    proc = procs.start(["-m", "engine.cli.main", *args], env, log)
    try:
        url = f"http://127.0.0.1:{free}{container['readinessProbe']['httpGet']['path']}"
        procs.wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, 60, url, log)
    finally:
        procs.stop(proc)


def test_the_runners_are_two_per_infrastructure_thanks_to_the_lease():
    compose = _compose()["services"]
    runners = [s for s in compose.values() if (s.get("build") or {}).get("target") == "runner"]
    assert len(runners) == 2 and len({tuple(s["command"]) for s in runners}) == 1
    (deployment,) = [
        d for d in _k8s() if d["kind"] == "Deployment" and d["metadata"]["name"] == "nodal-runner"
    ]
    assert deployment["spec"]["replicas"] == 2


def test_the_apps_health_check_and_ports_agree_with_streamlit(tmp_path):
    entry = yaml.safe_load(_instruction("app", "ENTRYPOINT"))
    line = shlex.split(entry[-1])
    port = int(_option(line, "--server.port"))
    probe = _healthcheck_url(_instruction("app", "HEALTHCHECK"))
    assert (probe.port, probe.path) == (port, "/_stcore/health")
    compose = _compose()["services"]
    apps = {
        s["environment"]["APP"]: s
        for s in compose.values()
        if (s.get("build") or {}).get("target") == "app"
    }
    assert set(apps) == APPS == {"design_studio", "deployer_console", "monitoring"}
    for service in apps.values():
        assert service["ports"][0].endswith(f":{port}")
        check = _healthcheck_url(" ".join(service["healthcheck"]["test"]))
        assert (check.port, check.path) == (port, "/_stcore/health")

    # The image's command for Monitoring, on loopback and a free port, answers the check.
    free = procs.free_port()
    cmd = line[line.index("-m") :]
    cmd[cmd.index("--server.port") + 1] = str(free)
    cmd[cmd.index("--server.address") + 1] = "127.0.0.1"
    cmd = [c.replace("$APP", "monitoring") for c in cmd]
    log = tmp_path / "app.log"
    env = {"NODAL_HOME": str(tmp_path / "home"), "NODAL_BASEMAP": "none"}
    proc = procs.start(cmd, env, log)
    try:
        url = f"http://127.0.0.1:{free}{probe.path}"
        procs.wait_for(lambda: httpx.get(url, timeout=2).text == "ok", 60, url, log)
    finally:
        procs.stop(proc)
