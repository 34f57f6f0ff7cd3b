"""API Designer page: API services of the project, test queries, a dev server, packaging."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st
import yaml

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from apps.design_studio.state import current_project, show_conflict, version_key
from engine.core.errors import NodalError
from engine.deployer import apipackages
from engine.design import apidesigner
from engine.project.definitions import DefinitionConflict
from engine.storage.objects import open_store as open_objects

settings = get_settings()
store = get_store(settings)
project = current_project()
DEV_PID, DEV_PORT = "api_dev_pid", "api_dev_port"


CONFLICT = "api_designer_conflict"


def _say(kind: str, message: str) -> None:
    st.session_state["api_designer_outcome"] = (kind, message)


def _loaded(service: str) -> apidesigner.Loaded | None:
    """The service file as this page last showed it: a save is refused if it changed since."""
    return st.session_state.get(version_key("api_service", service))


def _refused(exc: NodalError, prefix: str = "Not saved: ") -> None:
    if isinstance(exc, DefinitionConflict):
        st.session_state[CONFLICT] = exc
    else:
        _say("error", f"{prefix}{exc}")


NO_RECIPE = "(none: requests carry the model's inputs)"


def _save_prediction(service: str) -> None:
    recipe = st.session_state.get("pe_recipe", NO_RECIPE)
    enrichments = []
    if st.session_state.get("pe_enrich"):
        enrichments.append(
            {
                "dataset": st.session_state["pe_dataset"],
                "key": {st.session_state["pe_field"]: st.session_state["pe_column"]},
                "rows": st.session_state["pe_rows"],
                "on_missing": st.session_state["pe_missing"],
                "on_multiple": st.session_state["pe_multiple"],
            }
        )
    try:
        apidesigner.save_prediction_endpoint(
            project,
            service,
            st.session_state["pe_id"],
            st.session_state["pe_model"],
            enrichments,
            loaded=_loaded(service),
            feature_recipe=None if recipe == NO_RECIPE else recipe,
        )
    except NodalError as exc:
        _refused(exc)
        return
    _say("success", f"Prediction endpoint **{st.session_state['pe_id']}** saved.")


def _save_lookup(service: str) -> None:
    try:
        apidesigner.save_lookup_endpoint(
            project,
            service,
            st.session_state["le_id"],
            st.session_state["le_dataset"],
            st.session_state["le_key"],
            [
                c.strip()
                for c in (st.session_state.get("le_columns_text") or "").split(",")
                if c.strip()
            ]
            or None,
            st.session_state["le_missing"],
            st.session_state["le_multiple"],
            st.session_state["le_rows"],
            loaded=_loaded(service),
        )
    except NodalError as exc:
        _refused(exc)
        return
    _say("success", f"Lookup endpoint **{st.session_state['le_id']}** saved.")


def _add_query(service: str, endpoint: str, field: str) -> None:
    try:
        payload = json.loads(st.session_state.get("tq_json") or "")
    except ValueError:
        _say("error", "The test query is not valid JSON.")
        return
    query = {"name": st.session_state.get("tq_name", ""), field: payload}
    try:
        apidesigner.add_test_queries(project, service, endpoint, [query], _loaded(service))
    except NodalError as exc:
        _refused(exc, "")
        return
    _say("success", f"Test query **{query['name']}** saved.")


def _generate(service: str, endpoint: str) -> None:
    try:
        queries = apidesigner.queries_from_dataset(
            project,
            service,
            endpoint,
            st.session_state["tq_dataset"],
            int(st.session_state["tq_n"]),
        )
        existing = {
            q["name"]
            for ep in apidesigner.load_definition(project, service)["endpoints"]
            for q in ep.get("test_queries") or []
        }
        queries = [q for q in queries if q["name"] not in existing]
        apidesigner.add_test_queries(project, service, endpoint, queries, _loaded(service))
    except NodalError as exc:
        _refused(exc, "")
        return
    _say(
        "success",
        f"{len(queries)} test queries generated from **{st.session_state['tq_dataset']}**.",
    )


def _remove_query(service: str, endpoint: str) -> None:
    name = st.session_state.get("tq_remove")
    try:
        apidesigner.remove_test_query(project, service, endpoint, name, _loaded(service))
    except NodalError as exc:
        _refused(exc, "Not removed: ")
        return
    _say("success", f"Test query **{name}** removed.")


def _start_dev(service: str) -> None:
    port = int(st.session_state.get("dev_port_input", 12100))
    log = settings.home / "logs" / f"api-dev-{service}.log"
    st.session_state[DEV_PID] = apidesigner.start_dev_server(
        settings, project.name, service, port, log
    )
    st.session_state[DEV_PORT] = port
    _say("success", f"Dev server starting on port {port} (log: `{log}`).")


def _stop_dev() -> None:
    pid = st.session_state.pop(DEV_PID, None)
    if pid:
        apidesigner.stop_dev_server(pid)
    _say("success", "Dev server stopped.")


def _run_tests(service: str, definition: dict) -> None:
    tests = {ep["id"]: ep.get("test_queries") or [] for ep in definition["endpoints"]}
    url = f"http://127.0.0.1:{st.session_state[DEV_PORT]}"
    results = apidesigner.run_test_queries(tests, service, url)
    st.session_state["api_test_results"] = [r.__dict__ for r in results]


def _package(service: str) -> None:
    try:
        info = apipackages.create_package(
            settings.home,
            store,
            project,
            service,
            st.session_state.get("pkg_version", ""),
            st.session_state.get("pkg_notes", ""),
            current_user(),
            objects=open_objects(settings),  # NODAL_STORE_URL, else the home
        )
    except NodalError as exc:
        _say("error", f"Not packaged: {exc}")
        return
    _say(
        "success", f"Package **{info.version}** of {service} created and published to the deployer."
    )


st.title("API Designer")
outcome = st.session_state.pop("api_designer_outcome", None)
if outcome:
    (st.success if outcome[0] == "success" else st.error)(outcome[1])
conflict = st.session_state.pop(CONFLICT, None)
if conflict:
    show_conflict(conflict)
    st.caption("The page now shows their version: apply your change again if it still applies.")

services = sorted(project.api_services)
c1, c2 = st.columns([2, 1])
service = c1.selectbox("API service", [*services, "+ new service"], key="api_service_pick")
if service == "+ new service":
    service = c2.text_input("New service id", key="api_new_service", placeholder="fraud_detection")
if not service:
    st.stop()

# What this page shows is what a save from it is checked against (refused if it changed).
loaded = apidesigner.read_service(project, service)
st.session_state[version_key("api_service", service)] = loaded
definition = (yaml.safe_load(loaded.text) if loaded.text else None) or {
    "service_id": service,
    "endpoints": [],
}
datasets = sorted(project.datasets)
tab_ep, tab_tests, tab_pkg = st.tabs(["Endpoints", "Test queries", "Package"])

with tab_ep:
    for ep in definition["endpoints"]:
        with st.expander(f"{ep['id']} ({ep.get('type', 'prediction')})"):
            shown = {k: v for k, v in ep.items() if k != "test_queries"}
            st.code(json.dumps(shown, indent=2, default=str), language="json")
    with st.form("prediction_form"):
        st.markdown("**Prediction endpoint** from a saved model")
        st.text_input("Endpoint id", key="pe_id", value="predict")
        st.selectbox("Saved model", sorted(project.models), key="pe_model")
        st.selectbox(
            "Feature recipe",
            [
                NO_RECIPE,
                *sorted(r for r, d in project.recipes.items() if d.sql_file.endswith(".sql")),
            ],
            key="pe_recipe",
            help="The SQL recipe that computes the model's features from one request record. "
            "Real time runs it compiled, and a package is refused if real time and batch "
            "would differ. Without one, a request carries the model's inputs.",
        )
        st.checkbox("Enrich each request from a dataset", key="pe_enrich", value=True)
        e1, e2, e3 = st.columns(3)
        e1.selectbox("Lookup dataset", datasets, key="pe_dataset")
        e2.text_input("Request field", key="pe_field")
        e3.text_input("Dataset column", key="pe_column")
        e4, e5, e6 = st.columns(3)
        e4.selectbox("Rows", ["latest_day", "all"], key="pe_rows")
        e5.selectbox(
            "No match",
            ["ignore", "error"],
            key="pe_missing",
            help="ignore: the looked-up features are missing",
        )
        e6.selectbox("Several matches", ["first", "error"], key="pe_multiple")
        st.form_submit_button(
            "Save prediction endpoint", on_click=_save_prediction, args=(service,)
        )
    with st.form("lookup_form"):
        st.markdown("**Dataset lookup endpoint**")
        l1, l2, l3 = st.columns(3)
        l1.text_input("Endpoint id", key="le_id", value="lookup")
        l2.selectbox("Dataset", datasets, key="le_dataset")
        l3.text_input("Key column", key="le_key")
        st.text_input("Columns returned (comma-separated; all if empty)", key="le_columns_text")
        l4, l5, l6 = st.columns(3)
        l4.selectbox("Rows", ["all", "latest_day"], key="le_rows")
        l5.selectbox("No match", ["ignore", "error"], key="le_missing")
        l6.selectbox("Several matches", ["first", "error"], key="le_multiple")
        st.form_submit_button("Save lookup endpoint", on_click=_save_lookup, args=(service,))

with tab_tests:
    endpoints = [ep["id"] for ep in definition["endpoints"]]
    if not endpoints:
        st.info("Add an endpoint first.")
    else:
        endpoint = st.selectbox("Endpoint", endpoints, key="tq_endpoint")
        ep = next(e for e in definition["endpoints"] if e["id"] == endpoint)
        field = "features" if ep.get("type", "prediction") == "prediction" else "data"
        queries = ep.get("test_queries") or []
        if queries:
            st.dataframe(
                pd.DataFrame(
                    [{"name": q["name"], field: json.dumps(q.get(field))} for q in queries]
                ),
                hide_index=True,
                width="stretch",
                key="tq_table",
            )
            r1, r2 = st.columns([3, 1])
            r1.selectbox("Test query", [q["name"] for q in queries], key="tq_remove")
            r2.button(
                "Remove",
                key="tq_remove_button",
                on_click=_remove_query,
                args=(service, endpoint),
                icon=":material/delete:",
            )
        else:
            st.caption("No test query yet.")
        with st.container(border=True):
            st.markdown("**Write one**")
            st.text_input("Name", key="tq_name")
            st.text_area(f"`{field}` (JSON object)", key="tq_json", height=120)
            st.button(
                "Add test query", key="tq_add", on_click=_add_query, args=(service, endpoint, field)
            )
        with st.container(border=True):
            st.markdown("**Generate from dataset rows**")
            g1, g2 = st.columns(2)
            g1.selectbox("Dataset", datasets, key="tq_dataset")
            g2.number_input("Rows", 1, 100, 5, key="tq_n")
            st.button("Generate", key="tq_generate", on_click=_generate, args=(service, endpoint))
        with st.container(border=True):
            st.markdown("**Run them on a dev server** (this project's service as it is now)")
            pid = st.session_state.get(DEV_PID)
            if pid is None:
                st.number_input("Port", 1024, 65535, 12100, key="dev_port_input")
                st.button("Start dev server", key="dev_start", on_click=_start_dev, args=(service,))
            else:
                url = f"http://127.0.0.1:{st.session_state[DEV_PORT]}"
                ready = apidesigner.dev_server_ready(url, service)
                st.markdown(
                    f"Dev server PID {pid} at `{url}`: **{'ready' if ready else 'starting…'}**"
                )
                d1, d2 = st.columns(2)
                d1.button(
                    "Run test queries",
                    key="dev_run",
                    on_click=_run_tests,
                    args=(service, definition),
                    disabled=not ready,
                )
                d2.button("Stop dev server", key="dev_stop", on_click=_stop_dev)
            results = st.session_state.get("api_test_results")
            if results:
                ok = sum(r["ok"] for r in results)
                (st.success if ok == len(results) else st.error)(
                    f"{ok}/{len(results)} test queries passed"
                )
                st.dataframe(
                    pd.DataFrame(results), hide_index=True, width="stretch", key="tq_results"
                )

with tab_pkg:
    existing = apipackages.list_packages(store, service)
    if existing:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "version": p.version,
                        "created_by": p.created_by,
                        "created_at": p.created_at[:19],
                        "release notes": p.release_notes,
                    }
                    for p in existing
                ]
            ),
            hide_index=True,
            width="stretch",
            key="pkg_table",
        )
    st.text_input("Version", key="pkg_version", placeholder="v2")
    st.text_area("Release notes", key="pkg_notes")
    st.button(
        "Create package and publish to the deployer",
        key="pkg_create",
        on_click=_package,
        args=(service,),
        disabled=service not in project.api_services,
        help="Freezes the endpoints (active model versions, lookup rows, test queries) as an immutable package.",
    )
