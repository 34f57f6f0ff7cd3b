"""API Deployer page: API services on API nodes, their traffic split, switch and rollback."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from apps.common.status import status_badge, style_status
from engine.core.errors import NodalError
from engine.deployer import api_deployer, apipackages, visibility
from engine.deployer import deployments as deployer
from engine.design import apidesigner

settings = get_settings()
store = get_store(settings)
me = current_user()


def _outcome(kind: str, message: str) -> None:
    st.session_state["api_outcome"] = (kind, message)


def _tests_before(service: str, versions: list[str]) -> dict | None:
    """Run the packages' test queries in process; None (and a message) if one fails."""
    tests = {}
    for version in versions:
        results = apidesigner.run_package_tests_locally(store, service, version)
        failed = [r for r in results if not r.ok]
        tests[f"before:{version}"] = {
            "passed": len(results) - len(failed),
            "failed": [f"{r.endpoint}/{r.name}: {r.message}" for r in failed],
        }
        if failed:
            _outcome(
                "error",
                f"Test queries of **{version}** fail, nothing deployed: "
                + "; ".join(tests[f"before:{version}"]["failed"][:3]),
            )
            return None
    return tests


def _deploy() -> None:
    service = st.session_state.get("api_service")
    infra = st.session_state.get("api_infra")
    versions = st.session_state.get("api_versions") or []
    if not (service and infra and versions):
        _outcome("error", "Pick a service, an API infrastructure and at least one version.")
        return
    split = [(v, st.session_state.get(f"api_share_{v}", 0) / 100) for v in versions]
    try:
        api_deployer.normalise(split)
        tests = _tests_before(service, versions)
        if tests is None:
            return
        dep = api_deployer.deploy(
            store,
            service,
            infra,
            split,
            current_user(),
            access_mode=st.session_state.get("api_access"),
            tests=tests,
        )
    except NodalError as exc:
        _outcome("error", f"Deployment refused: {exc}")
        return
    _outcome(
        "success",
        f"**{dep.deployment.deployment_id}** now serves **{api_deployer.describe(dep.traffic)}** "
        f"({dep.access_mode}); API nodes switch at their next sync, without dropping a request.",
    )


def _rollback(dep_id: str) -> None:
    try:
        dep = api_deployer.rollback(store, dep_id, current_user())
    except NodalError as exc:
        _outcome("error", f"Rollback refused: {exc}")
        return
    _outcome("success", f"**{dep_id}** rolled back to **{api_deployer.describe(dep.traffic)}**.")


def _switch(service: str, infra: str) -> None:
    try:
        newest = api_deployer.newest_version(store, service)
        tests = _tests_before(service, [newest])
        if tests is None:
            return
        dep = api_deployer.switch_to_newest(store, service, infra, current_user(), tests=tests)
    except NodalError as exc:
        _outcome("error", f"Switch refused: {exc}")
        return
    _outcome(
        "success", f"**{dep.deployment.deployment_id}** now sends all traffic to **{newest}**."
    )


st.title("API deployments")
outcome = st.session_state.pop("api_outcome", None)
if outcome:
    (st.success if outcome[0] == "success" else st.error)(outcome[1])

visible = {
    d.deployment_id
    for d in deployer.visible_to(store, me, deployer.list_deployments(store, kind="api"))
}
deployments = [
    d for d in api_deployer.list_api_deployments(store) if d.deployment.deployment_id in visible
]
stage_of = {i["infra_id"]: i["stage"] for i in deployer.list_infras(store)}
if not deployments:
    st.info(
        "No API service is deployed yet. Package one (`nodal api package v1`), create an API "
        "infrastructure (`nodal infra create api-prod --kind apinode --stage prod`), then deploy below.",
        icon=":material/info:",
    )
else:
    worst = deployer.worst_status([d.deployment.status for d in deployments])
    st.markdown(f"**Overall** {status_badge(worst)} — worst of {len(deployments)} API deployments")
    table = pd.DataFrame(
        [
            {
                "deployment": d.deployment.deployment_id,
                "status": d.deployment.status,
                "stage": stage_of.get(d.deployment.infra_id, "?"),
                "service": d.service,
                "infrastructure": d.deployment.infra_id,
                "traffic": api_deployer.describe(d.traffic),
                "access": d.access_mode,
                "node message": d.deployment.node_message,
            }
            for d in deployments
        ]
    )
    st.dataframe(style_status(table, "status"), hide_index=True, width="stretch", key="api_table")

    st.subheader("Switch, roll back, history")
    labels = {d.deployment.deployment_id: d for d in deployments}
    chosen = st.selectbox("API deployment", list(labels), key="api_chosen")
    dep = labels[chosen]
    c1, c2 = st.columns(2)
    c1.button(
        "Switch to the newest package",
        key="api_switch",
        on_click=_switch,
        args=(dep.service, dep.deployment.infra_id),
        help="Runs the newest package's test queries first; refuses if one fails.",
    )
    c2.button(
        "Roll back",
        key="api_rollback",
        on_click=_rollback,
        args=(chosen,),
        help="Restore the traffic split before the last change, in one action.",
    )
    changes = api_deployer.changes(store, chosen)
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "at": c["at"][:19].replace("T", " "),
                    "who": c["actor"],
                    "action": c["action"],
                    "from": c["from"] or "—",
                    "to": c["to"],
                    "test queries": "; ".join(
                        f"{k}: {v['passed']} ok, {len(v['failed'])} failed"
                        for k, v in c["tests"].items()
                    ),
                }
                for c in changes
            ]
        ),
        hide_index=True,
        width="stretch",
        key="api_history",
    )

st.subheader("Deploy package versions")
packages = visibility.packages_for(store, me, apipackages.list_packages(store))
infras = visibility.infras_for(
    store, me, [i for i in deployer.list_infras(store) if i["kind"] == "apinode"], "deploy"
)
with st.container(border=True):
    if not packages or not infras:
        st.info(
            "You need an API package of a project you read and an apinode infrastructure on "
            "which you hold the deploy right.",
            icon=":material/info:",
        )
    else:
        c1, c2, c3 = st.columns(3)
        service = c1.selectbox("Service", sorted({p.service for p in packages}), key="api_service")
        infra = c2.selectbox(
            "API infrastructure",
            [i["infra_id"] for i in infras],
            format_func=lambda i: f"{i} ({stage_of.get(i, '?')})",
            key="api_infra",
        )
        current = next(
            (d for d in deployments if d.service == service and d.deployment.infra_id == infra),
            None,
        )
        unchanged = f"unchanged ({current.access_mode})" if current else "public (new deployment)"
        c3.selectbox(
            "Access",
            [None, "public", "keys"],  # None: the deployment keeps its access mode
            format_func=lambda mode: unchanged if mode is None else mode,
            key="api_access",
            help="keys: requests need an API key. A redeploy keeps the access mode unless "
            "you choose one here.",
        )
        versions = st.multiselect(
            "Versions",
            [p.version for p in packages if p.service == service],
            key="api_versions",
            help="One version takes all traffic; several share it by the percentages below.",
        )
        if versions:
            cols = st.columns(len(versions))
            for col, v in zip(cols, versions, strict=True):
                col.number_input(
                    f"% of traffic to {v}",
                    min_value=0,
                    max_value=100,
                    value=100 // len(versions) + (100 % len(versions) if v == versions[0] else 0),
                    key=f"api_share_{v}",
                )
        st.button("Deploy", type="primary", key="api_deploy", on_click=_deploy)
