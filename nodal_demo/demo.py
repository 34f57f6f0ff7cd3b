"""``make demo``: prepare the fraud example end to end, then run all five processes.

Preparation is idempotent: every step checks what exists and reuses it, so a second
``make demo`` starts in seconds. Ctrl-C (or SIGTERM) stops every child process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engine.automation import dashboards, runs
from engine.core.settings import Settings
from engine.deployer import api_deployer, apipackages, bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.design import selection
from engine.models import saved as models
from engine.project import flow
from engine.project.project import Project, ProjectError
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, open_store
from nodal_demo import datagen, people

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "fraud"
PROJECT, MODEL, SERVICE, ENDPOINT = "fraud", "fraud_model", "fraud_detection", "predict_fraud"
AUTOMATION_INFRA, API_INFRA = "automation-prod", "api-prod"
PORTS = {"design_studio": 8501, "deployer_console": 8502, "monitoring": 8503, "api": 12000}


def say(msg: str) -> None:
    print(f"[nodal demo] {msg}", flush=True)


def prepare(
    settings: Settings, store: ControlStore, generator: datagen.GeneratorConfig | None = None
) -> Project:
    """People → data → project → flow → model → bundle → deployments. Reuses whatever
    exists. Everything is done as ``settings.user``, the home's first administrator."""
    if people.create(store, settings.user, settings.home):
        say("created the demo's people: " + ", ".join(people.NAMES))
    if not (settings.data_dir / datagen.META_FILE).exists():
        say(f"generating example data into {settings.data_dir} …")
        summary = datagen.generate(generator or datagen.GeneratorConfig(), settings.data_dir)
        say(
            f"  {summary.n_transactions} transactions, {len(summary.days)} days, {summary.fraud_rate:.2%} fraud"
        )
    try:
        project = design.open_project(settings, PROJECT)
    except ProjectError:
        project = design.import_project(settings, store, EXAMPLE, actor=settings.user)
        say(f"imported project {PROJECT} into {project.root}")
    if project.active_model_version(MODEL) is None:
        say("building the flow …")
        flow.build(project, "training_set")
        say("training the fraud model …")
        meta = models.train(project, MODEL, settings.user)
        say(f"  {MODEL} {meta['version']}: ROC AUC {meta['metrics']['roc_auc']:.3f}")
    elif not project.dataset("card_profiles").exists():
        flow.build(project, "card_profiles")
    if not bundles.list_bundles(store, PROJECT):
        bundles.create_bundle(
            settings.home, store, project, "v1", "First bundle, made by make demo.", settings.user
        )
        say("created bundle v1")
    deployer.create_infra(
        store, AUTOMATION_INFRA, "automation", "prod", exist_ok=True, actor=settings.user
    )
    deployer.create_infra(store, API_INFRA, "apinode", "prod", exist_ok=True, actor=settings.user)
    if not deployer.list_deployments(store, AUTOMATION_INFRA, kind="project"):
        latest = bundles.list_bundles(store, PROJECT)[0].bundle_id
        deployer.deploy_bundle(store, PROJECT, latest, AUTOMATION_INFRA, settings.user)
        say(f"deployed bundle {latest} to {AUTOMATION_INFRA}")
    if not apipackages.list_packages(store, SERVICE):
        apipackages.create_package(
            settings.home,
            store,
            project,
            SERVICE,
            "v1",
            "First package, made by make demo.",
            settings.user,
        )
        say("created API package v1")
    if not deployer.list_deployments(store, API_INFRA, kind="api"):
        latest = apipackages.list_packages(store, SERVICE)[0].version
        api_deployer.deploy_package(store, SERVICE, latest, API_INFRA, settings.user)
        say(f"deployed API package {latest} to {API_INFRA}")
    return project


def sample_transaction(settings: Settings) -> dict:
    """The newest day's riskiest-looking transaction, as an application would send it."""
    ref = ds.DatasetRef("transactions", settings.data_dir / "transactions", "day")
    day = ref.partitions()[-1]
    frame = ds.query_df(
        "SELECT * EXCLUDE (day) FROM t WHERE channel = 'online' ORDER BY amount DESC LIMIT 1",
        {"t": (ref, [day])},
    )
    rec = frame.iloc[0].to_dict()
    rec["ts"] = rec["ts"].isoformat()
    rec["card_present"] = bool(rec["card_present"])
    rec["amount"] = float(rec["amount"])
    return {k: v for k, v in rec.items() if k in datagen.TRANSACTION_COLUMNS}


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    health_url: str | None


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "NODAL_HOME": str(settings.home.resolve()),
            "NODAL_DATA_DIR": str(settings.data_dir.resolve()),
            "NODAL_BASEMAP": settings.basemap,
            "NODAL_POLL_SECONDS": str(min(settings.poll_seconds, 2.0)),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_processes(settings: Settings, log_dir: Path) -> list[Child]:
    log_dir.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    streamlit_flags = [
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]
    specs = [
        (
            f"design_studio :{PORTS['design_studio']}",
            [
                py,
                "-m",
                "streamlit",
                "run",
                str(REPO / "apps/design_studio/app.py"),
                "--server.port",
                str(PORTS["design_studio"]),
                *streamlit_flags,
            ],
            f"http://127.0.0.1:{PORTS['design_studio']}/_stcore/health",
        ),
        (
            f"deployer_console :{PORTS['deployer_console']}",
            [
                py,
                "-m",
                "streamlit",
                "run",
                str(REPO / "apps/deployer_console/app.py"),
                "--server.port",
                str(PORTS["deployer_console"]),
                *streamlit_flags,
            ],
            f"http://127.0.0.1:{PORTS['deployer_console']}/_stcore/health",
        ),
        (
            f"monitoring :{PORTS['monitoring']}",
            [
                py,
                "-m",
                "streamlit",
                "run",
                str(REPO / "apps/monitoring/app.py"),
                "--server.port",
                str(PORTS["monitoring"]),
                *streamlit_flags,
            ],
            f"http://127.0.0.1:{PORTS['monitoring']}/_stcore/health",
        ),
        ("runner", [py, "-m", "engine.runner", "--infra", AUTOMATION_INFRA], None),
        (
            f"api node :{PORTS['api']}",
            [py, "-m", "engine.serving", "--infra", API_INFRA, "--port", str(PORTS["api"])],
            f"http://127.0.0.1:{PORTS['api']}/isAlive/",
        ),
    ]
    children = []
    env = _env(settings)
    for name, cmd, health in specs:
        log = open(log_dir / f"{name.split()[0]}.log", "ab")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        children.append(Child(name, proc, health))
    return children


def wait_healthy(children: list[Child], timeout: float = 90.0) -> list[str]:
    """Names of children not healthy (or dead) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pending = [c for c in children if c.health_url]
    while pending and time.monotonic() < deadline:
        for c in list(pending):
            if c.proc.poll() is not None:
                return [f"{c.name} exited with code {c.proc.returncode}"]
            try:
                with urllib.request.urlopen(c.health_url, timeout=2) as resp:
                    if resp.status == 200:
                        pending.remove(c)
            except OSError:
                pass
        time.sleep(0.5)
    dead = [
        f"{c.name} exited with code {c.proc.returncode}"
        for c in children
        if c.proc.poll() is not None
    ]
    return dead + [f"{c.name} not healthy after {timeout:.0f}s" for c in pending]


def stop(children: list[Child]) -> None:
    for c in children:
        if c.proc.poll() is None:
            os.killpg(c.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for c in children:
        try:
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait()


def ensure_published_day(settings: Settings, store: ControlStore, timeout: float = 120.0) -> None:
    """If the map has nothing yet, ask the (running) runner for one daily scoring run."""
    if not dashboards.published(store, PROJECT, "fraud_map", AUTOMATION_INFRA).empty:
        return
    say("asking the automation runner to score the newest day …")
    run_id = runs.request_manual_run(
        store, settings.user, AUTOMATION_INFRA, PROJECT, "daily_scoring"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = runs.get_run(store, run_id)
        if run["status"] not in ("QUEUED", "RUNNING"):
            say(f"  daily_scoring run {run_id}: {run['status']} {run['message']}")
            return
        time.sleep(1)
    say(
        f"  daily_scoring run {run_id} still not finished after {timeout:.0f}s; see var/logs/runner.log"
    )


def curl_command(settings: Settings) -> str:
    body = json.dumps({"features": sample_transaction(settings)})
    url = f"http://127.0.0.1:{PORTS['api']}/public/api/v1/{SERVICE}/{ENDPOINT}/predict"
    return f"curl -s -X POST {url} \\\n  -d '{body}'"


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(settings: Settings, prepare_only: bool = False) -> int:
    # Ctrl-C and SIGTERM both stop everything (SIGINT is set explicitly because a shell may
    # start us with it ignored).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    store = open_store(settings.control_store_url)
    prepare(settings, store)
    if selection.current_project(settings.home) is None:
        selection.use_project(settings.home, PROJECT)  # so `nodal …` acts on it, as README shows
        say(f"current project: {PROJECT} (change it with `nodal project use NAME`)")
    if prepare_only:
        say("prepared; not starting processes (--prepare-only)")
        return 0
    busy = [f"{name} ({port})" for name, port in PORTS.items() if _port_busy(port)]
    if busy:
        say(
            f"ports already in use: {', '.join(busy)}. Is another `make demo` running? Stop it first."
        )
        return 1
    children = start_processes(settings, settings.home / "logs")
    try:
        problems = wait_healthy(children)
        if problems:
            say("could not start: " + "; ".join(problems) + f" (logs in {settings.home / 'logs'})")
            return 1
        ensure_published_day(settings, store)
        print(
            f"""
nodal is up (logs in {settings.home / "logs"}):
  Design Studio     http://127.0.0.1:{PORTS["design_studio"]}   (analysts: flow, model)
  Deployer Console  http://127.0.0.1:{PORTS["deployer_console"]}   (ops: bundles, deployments)
  Monitoring        http://127.0.0.1:{PORTS["monitoring"]}   (business: daily fraud map)
  API node          http://127.0.0.1:{PORTS["api"]}  (real-time scoring; OpenAPI at /schema)
  Automation runner {AUTOMATION_INFRA} (daily_scoring every day at 06:00 UTC)

Sign in (demo accounts; create real ones with `nodal user create`):
{people.sign_in_lines(settings.home)}

Score one transaction:
{curl_command(settings)}

Press Ctrl-C to stop everything.""",
            flush=True,
        )
        while all(c.proc.poll() is None for c in children):
            time.sleep(1)
        dead = [c.name for c in children if c.proc.poll() is not None]
        say(
            f"{', '.join(dead)} stopped unexpectedly; stopping the rest (logs in {settings.home / 'logs'})"
        )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping all processes …")
        stop(children)
        say("stopped.")
