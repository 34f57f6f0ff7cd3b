"""API service commands: ``nodal api …`` (designer, packages, API Deployer, keys)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from engine.cli.common import add, print_rows, store
from engine.core.settings import Settings


def cmd_api_package(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import apipackages
    from engine.design import projects as design

    info = apipackages.create_package(
        s.home, store(s), design.open_project(s, a.project), a.service, a.version, a.notes, s.user
    )
    print(f"package {info.version} of {info.service} created and published: {info.path}")
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

    return _deploy_tested(s, a, api_deployer.parse_split(a.versions), "deploy")


def cmd_api_switch_newest(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer

    return _deploy_tested(s, a, [(api_deployer.newest_version(store(s), a.service), 1.0)], "switch")


def cmd_api_rollback(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer
    from engine.deployer import deployments as deployer

    dep = api_deployer.rollback(store(s), deployer.deployment_id_for(a.service, a.infra), s.user)
    print(f"{dep.deployment.deployment_id}: rolled back to {api_deployer.describe(dep.traffic)}")
    return 0


def cmd_api_access(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import api_deployer
    from engine.deployer import deployments as deployer

    dep = api_deployer.set_access(
        store(s), deployer.deployment_id_for(a.service, a.infra), a.mode, s.user
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

    rows = api_deployer.changes(store(s), deployer.deployment_id_for(a.service, a.infra))
    for r in rows:
        r["tests"] = "; ".join(
            f"{k}: {v['passed']} ok, {len(v['failed'])} failed" for k, v in r["tests"].items()
        )
    print_rows(rows, ["at", "actor", "action", "from", "to", "tests"])
    return 0


def cmd_api_test(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import apidesigner

    st = store(s)
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
    return 0 if _print_tests(f"{a.version} ({a.url or 'in process'})", results) else 1


def cmd_api_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import apipackages

    print_rows(
        [asdict(p) for p in apipackages.list_packages(store(s), a.service)],
        ["service", "version", "project", "created_by", "created_at", "release_notes"],
    )
    return 0


def cmd_keys_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import apikeys

    key, secret = apikeys.create_key(store(s), a.service, s.user, a.infra, a.label)
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

    return serving.dev_main(["--project", a.project, "--service", a.service, "--port", str(a.port)])


def _deploy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", default="fraud_detection")
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
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--project", default="fraud")
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
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--infra", required=True)
    p = add(api, "access", cmd_api_access, "Make a deployed service public or require API keys.")
    p.add_argument("mode", choices=["public", "keys"])
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--infra", required=True)
    p = add(api, "status", cmd_api_status, "API deployments: status, traffic split, access mode.")
    p.add_argument("--infra")
    p = add(
        api, "history", cmd_api_history, "Changes of an API deployment: who, when, from, to, tests."
    )
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--infra", required=True)
    p = add(api, "test", cmd_api_test, "Run a package's test queries, in process or against --url.")
    p.add_argument("version")
    p.add_argument("--service", default="fraud_detection")
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
    p.add_argument("--project", default="fraud")
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--port", type=int, default=12100)

    keys = add(api, "keys", lambda s, a: 0, "API keys: create, list, revoke.")
    ksub = keys.add_subparsers(dest="keys_cmd", required=True)
    p = add(ksub, "create", cmd_keys_create, "Create an API key (shown once, stored hashed).")
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--infra", help="valid on this infrastructure only (default: all)")
    p.add_argument("--label", default="", help="who or what uses it")
    p = add(ksub, "list", cmd_keys_list, "List API keys (never their secrets).")
    p.add_argument("--service")
    p = add(ksub, "revoke", cmd_keys_revoke, "Revoke an API key by its id.")
    p.add_argument("key_id")
