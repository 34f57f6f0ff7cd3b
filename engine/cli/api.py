"""API service commands: ``nodal api …`` (designer, packages, API Deployer, keys)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from engine.cli.common import (
    add,
    add_project,
    choose,
    open_project,
    print_rows,
    read_text_file,
    store,
)
from engine.core.settings import Settings

SERVICE_HOW = "pass --service ID"


def _project_service(project: Any, a: argparse.Namespace) -> str:
    """--service, else the project's only API service."""
    from engine.design import selection

    return choose(SERVICE_HOW, selection.service_name, project, a.service)


def _deployer_service(
    s: Settings, a: argparse.Namespace, infra: str | None = None, versions: list[str] | None = None
) -> str:
    """--service, else the only API service deployed on ``infra`` (or with packages)."""
    from engine.design import selection

    return choose(
        SERVICE_HOW, selection.deployer_service_name, store(s), s.home, a.service, infra, versions
    )


def cmd_api_package(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import apipackages

    project = open_project(s, a)
    service = _project_service(project, a)
    from engine.storage.objects import open_store

    info = apipackages.create_package(
        s.home, store(s), project, service, a.version, a.notes, s.user, objects=open_store(s)
    )
    print(
        f"package {info.version} of {info.service} (project {project.name}) created and "
        f"published: {info.path}"
    )
    return 0


def _print_tests(title: str, results: list[Any]) -> bool:
    if not results:
        print(f"{title}: no test queries in the package")
        return True
    failed = [r for r in results if not r.ok]
    print(f"{title}: {len(results) - len(failed)}/{len(results)} test queries passed")
    for r in failed:
        print(f"  FAILED {r.endpoint}/{r.name}: {r.message}")
    return not failed


def _summary(results: list[Any]) -> dict[str, Any]:
    return {
        "passed": sum(r.ok for r in results),
        "failed": [f"{r.endpoint}/{r.name}: {r.message}" for r in results if not r.ok],
    }


def _deploy_tested(
    s: Settings, a: argparse.Namespace, split: list[tuple[str, Any]], action: str
) -> int:
    """Run the new versions' test queries, deploy, then run them against the node (--url)."""
    from engine.deployer import api_deployer
    from engine.deployer import deployments as deployer
    from engine.design import apidesigner

    st = store(s)
    split = [(t["generation"], t["proba"]) for t in api_deployer.normalise(split)]
    tests: dict[str, Any] = {}
    if not a.skip_tests:
        for version, _ in split:
            results = apidesigner.run_package_tests_locally(st, a.service, version)
            tests[f"before:{version}"] = _summary(results)
            if not _print_tests(f"{version} before switching", results):
                raise deployer.DeployerError(
                    f"test queries of {version} fail: nothing deployed (--skip-tests to force)"
                )
    dep = api_deployer.deploy(st, a.service, a.infra, split, s.user, action, a.access, tests)
    print(
        f"{dep.deployment.deployment_id}: now {api_deployer.describe(dep.traffic)} "
        f"({dep.access_mode}); API nodes switch at their next sync"
    )
    if a.url and not a.skip_tests:
        ok = True
        for version, _ in split:
            if not apidesigner.wait_until_serving(a.url, a.service, version):
                print(f"the node at {a.url} does not serve {version} yet")
                return 1
            results = apidesigner.run_test_queries(
                apidesigner.package_tests(st, a.service, version),
                a.service,
                a.url,
                generation=version,
            )
            api_deployer.record_tests(
                st, dep.deployment.deployment_id, {f"after:{version}": _summary(results)}
            )
            ok &= _print_tests(f"{version} after switching", results)
        return 0 if ok else 1
    return 0


def cmd_api_deploy(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer

    split = api_deployer.parse_split(a.versions)
    a.service = _deployer_service(s, a, versions=[v for v, _ in split])
    return _deploy_tested(s, a, split, "deploy")


def cmd_api_switch_newest(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer

    a.service = _deployer_service(s, a)
    return _deploy_tested(s, a, [(api_deployer.newest_version(store(s), a.service), 1.0)], "switch")


def cmd_api_rollback(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer
    from engine.deployer import deployments as deployer

    service = _deployer_service(s, a, a.infra)
    dep = api_deployer.rollback(store(s), deployer.deployment_id_for(service, a.infra), s.user)
    print(f"{dep.deployment.deployment_id}: rolled back to {api_deployer.describe(dep.traffic)}")
    return 0


def cmd_api_access(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer
    from engine.deployer import deployments as deployer

    service = _deployer_service(s, a, a.infra)
    dep = api_deployer.set_access(
        store(s), deployer.deployment_id_for(service, a.infra), a.mode, s.user
    )
    print(f"{dep.deployment.deployment_id}: access is now {dep.access_mode}")
    return 0


def cmd_api_status(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer

    print_rows(
        [
            {
                "deployment": d.deployment.deployment_id,
                "status": d.deployment.status,
                "traffic": api_deployer.describe(d.traffic),
                "access": d.access_mode,
                "node": d.deployment.node_message,
            }
            for d in api_deployer.list_api_deployments(store(s), a.infra)
        ],
        ["deployment", "status", "traffic", "access", "node"],
    )
    return 0


def cmd_api_history(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer
    from engine.deployer import deployments as deployer

    dep_id = deployer.deployment_id_for(_deployer_service(s, a, a.infra), a.infra)
    print(f"changes of {dep_id}:")
    rows = api_deployer.changes(store(s), dep_id)
    for r in rows:
        r["tests"] = "; ".join(
            f"{k}: {v['passed']} ok, {len(v['failed'])} failed" for k, v in r["tests"].items()
        )
    print_rows(rows, ["at", "actor", "action", "from", "to", "tests"])
    return 0


def cmd_api_test(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import apidesigner

    st = store(s)
    a.service = _deployer_service(s, a, versions=[a.version])
    if a.url:
        results = apidesigner.run_test_queries(
            apidesigner.package_tests(st, a.service, a.version),
            a.service,
            a.url,
            generation=a.version,
            api_key=a.api_key,
        )
    else:
        results = apidesigner.run_package_tests_locally(st, a.service, a.version)
    where = a.url or "in process"
    return 0 if _print_tests(f"{a.service} {a.version} ({where})", results) else 1


def cmd_api_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import apipackages

    print_rows(
        [asdict(p) for p in apipackages.list_packages(store(s), a.service)],
        ["service", "version", "project", "created_by", "created_at", "release_notes"],
    )
    return 0


def cmd_keys_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import apikeys

    service = _deployer_service(s, a, a.infra)
    key, secret = apikeys.create_key(store(s), service, s.user, a.infra, a.label)
    print(f"API key {key.key_id} for {key.service} on {key.infra_id or 'every infrastructure'}:")
    print(secret)
    print("Keep it now: it is stored hashed and cannot be shown again.")
    return 0


def cmd_keys_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import apikeys

    rows = [asdict(k) for k in apikeys.list_keys(store(s), a.service)]
    for r in rows:
        r["infra_id"] = r["infra_id"] or "*"
        r["state"] = "revoked" if r["revoked_at"] else "active"
    print_rows(
        rows, ["key_id", "service", "infra_id", "label", "state", "created_by", "created_at"]
    )
    return 0


def cmd_keys_revoke(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import apikeys

    key = apikeys.revoke_key(store(s), a.key_id, s.user)
    print(f"API key {key.key_id} revoked (API nodes refuse it from their next sync)")
    return 0


def cmd_dev_server(s: Settings, a: argparse.Namespace) -> int:
    from engine import serving

    project = open_project(s, a)
    service = _project_service(project, a)
    print(f"dev server of {service} (project {project.name}) on port {a.port}", flush=True)
    return serving.dev_main(
        ["--project", project.name, "--service", service, "--port", str(a.port)]
    )


def cmd_service_show(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import service_files

    text, _ = service_files.read_service(open_project(s, a), a.service_id)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_service_save(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import service_files

    project = open_project(s, a)
    existed = a.service_id in project.api_services
    service_files.save_service(project, a.service_id, read_text_file(a.file))
    print(
        f"API service {a.service_id} {'replaced' if existed else 'created'} in project "
        f"{project.name} (api_services/{a.service_id}.yaml)"
    )
    return 0


DEPLOYED_HELP = (
    "the API service (default: the only one on --infra; with several, the current project's)"
)
PACKAGED_HELP = (
    "the API service (default: the only one with packages; with several, the current project's)"
)
PROJECT_SERVICE_HELP = "the API service (default: the project's only one)"


def _deploy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", help=PACKAGED_HELP)
    p.add_argument("--infra", required=True, help="apinode infrastructure")
    p.add_argument("--access", choices=["public", "keys"], help="access mode (default: unchanged)")
    p.add_argument(
        "--skip-tests", action="store_true", help="do not run the packages' test queries"
    )
    p.add_argument(
        "--url",
        help="an API node of the infrastructure: run the test queries there after switching",
    )


def register(top: Any) -> None:
    api = top.add_parser("api", help="API services: packages, API Deployer, keys").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        api,
        "package",
        cmd_api_package,
        "Freeze an API service as an immutable package version and publish it to the deployer.",
    )
    p.add_argument("version")
    p.add_argument("--service", help=PROJECT_SERVICE_HELP)
    add_project(p)
    p.add_argument("--notes", default="", help="release notes")
    p = add(
        api,
        "deploy",
        cmd_api_deploy,
        "Deploy package versions with a traffic split: `v2` or `v1=0.9 v2=0.1` (shares sum to 1). "
        "Runs the packages' test queries first and refuses if one fails.",
    )
    p.add_argument("versions", nargs="+", help="VERSION, or VERSION=SHARE ...")
    _deploy_options(p)
    p = add(
        api,
        "switch-newest",
        cmd_api_switch_newest,
        "Send all traffic to the service's newest package.",
    )
    _deploy_options(p)
    p = add(api, "rollback", cmd_api_rollback, "Restore the traffic split before the last change.")
    p.add_argument("--service", help=DEPLOYED_HELP)
    p.add_argument("--infra", required=True)
    p = add(api, "access", cmd_api_access, "Make a deployed service public or require API keys.")
    p.add_argument("mode", choices=["public", "keys"])
    p.add_argument("--service", help=DEPLOYED_HELP)
    p.add_argument("--infra", required=True)
    p = add(api, "status", cmd_api_status, "API deployments: status, traffic split, access mode.")
    p.add_argument("--infra")
    p = add(
        api, "history", cmd_api_history, "Changes of an API deployment: who, when, from, to, tests."
    )
    p.add_argument("--service", help=DEPLOYED_HELP)
    p.add_argument("--infra", required=True)
    p = add(api, "test", cmd_api_test, "Run a package's test queries, in process or against --url.")
    p.add_argument("version")
    p.add_argument("--service", help=PACKAGED_HELP)
    p.add_argument("--url", help="an API node serving the version (forces that generation)")
    p.add_argument("--api-key", help="API key, when the service needs one")
    p = add(api, "list", cmd_api_list, "List API packages.")
    p.add_argument("--service")
    p = add(
        api,
        "dev-server",
        cmd_dev_server,
        "Serve a design project's API service as it is now (no package).",
    )
    add_project(p)
    p.add_argument("--service", help=PROJECT_SERVICE_HELP)
    p.add_argument("--port", type=int, default=12100)

    keys = add(api, "keys", lambda s, a: 0, "API keys: create, list, revoke.")
    ksub = keys.add_subparsers(dest="keys_cmd", required=True)
    p = add(ksub, "create", cmd_keys_create, "Create an API key (shown once, stored hashed).")
    p.add_argument(
        "--service",
        help="the API service (default: the only one on --infra, else the only one with "
        "packages; with several, the current project's)",
    )
    p.add_argument("--infra", help="valid on this infrastructure only (default: all)")
    p.add_argument("--label", default="", help="who or what uses it")
    p = add(ksub, "list", cmd_keys_list, "List API keys (never their secrets).")
    p.add_argument("--service")
    p = add(ksub, "revoke", cmd_keys_revoke, "Revoke an API key by its id.")
    p.add_argument("key_id")

    service = add(
        api, "service", lambda s, a: 0, "API service definitions of a project: save, show."
    )
    ssub = service.add_subparsers(dest="service_cmd", required=True)
    p = add(
        ssub,
        "save",
        cmd_service_save,
        "Create or replace an API service of the design project from a YAML file, checked "
        "by the API Designer (endpoints, models, lookups, test queries): refused, with every "
        "problem listed, if it is invalid.",
    )
    p.add_argument("service_id")
    p.add_argument("--file", required=True, help="the service's YAML (- reads standard input)")
    add_project(p)
    p = add(ssub, "show", cmd_service_show, "Print an API service's YAML.")
    p.add_argument("service_id")
    add_project(p)
