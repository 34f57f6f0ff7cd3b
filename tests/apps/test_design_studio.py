"""Design Studio pages, run with AppTest against a real prepared home."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from engine.automation import runs
from engine.deployer import bundles
from engine.design import dataset_import, lab, lab_jobs
from engine.design import projects as design
from engine.models import saved as models
from engine.project import definitions
from engine.storage import datasets as ds
from engine.storage.datasets import query_df, scan_sql
from tests.homes import copy_home, environ, sign_in_app

APP = Path(__file__).resolve().parents[2] / "apps" / "design_studio" / "app.py"


def _open(page: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=120))
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def studio_copy(demo_env, tmp_path, monkeypatch):
    """A private copy of the demo home, seen by the app (the test changes its files)."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return settings, store


def _node_line(dot: str, node_id: str) -> str:
    return next(line for line in dot.splitlines() if line.strip().startswith(f'"{node_id}" ['))


def _table(at: AppTest, column: str):  # noqa: ANN202 - a DataFrame
    """The first table showing ``column`` (AppTest cannot look dataframes up by key)."""
    for frame in at.dataframe:
        value = frame.value
        if column in value.columns or column == value.index.name:
            return value
    raise AssertionError(f"no table with a column {column!r}")


def _errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


# --- Flow (project home) ------------------------------------------------------------------------


def test_flow_page_draws_recipes_between_datasets_with_sources_shaded(demo_environ):
    at = _open("views/flow.py")
    project = demo_environ.project
    assert at.title[0].value == "Flow of fraud"
    dot = at.get("graphviz_chart")[0].proto.spec
    for recipe in project.recipes.values():
        assert f'"recipe:{recipe.name}" -> "ds:{recipe.output}"' in dot
        for name in recipe.inputs:
            assert f'"ds:{name}" -> "recipe:{recipe.name}"' in dot
    assert 'fillcolor="#dbeafe"' in _node_line(dot, "ds:transactions")  # a source
    assert 'fillcolor="#f1f5f9"' in _node_line(dot, "ds:features")  # managed
    assert '"ds:training_set" -> "model:fraud_model"' in dot


def test_flow_page_summarises_the_project_status(demo_environ):
    at = _open("views/flow.py")
    tiles = {t.label: t.value for t in at.metric}
    project = demo_environ.project
    with_data = sum(project.dataset(n).exists() for n in project.datasets)
    assert tiles["Datasets with data"] == f"{with_data} / {len(project.datasets)}"
    assert tiles["Recipes"] == str(len(project.recipes))
    assert tiles["Saved models"] == f"fraud_model {project.active_model_version('fraud_model')}"
    assert tiles["Bundles"] == str(len(bundles.list_bundles(demo_environ.store, "fraud")))


def test_flow_page_lists_every_dataset_with_its_partitions(demo_environ):
    at = _open("views/flow.py")
    table = at.dataframe[0].value.set_index("dataset")
    project = demo_environ.project
    assert sorted(table.index) == sorted(project.datasets)
    transactions = project.dataset("transactions")
    assert table.loc["transactions", "kind"] == "source"
    assert table.loc["transactions", "partitions"] == len(transactions.partitions()) > 0
    assert table.loc["features", "built by"] == "recipes/features.sql"
    assert bool(table.loc["training_set", "exists"]) is True
    assert bool(table.loc["scored", "exists"]) is False  # scored on the automation node only
    writer = table.loc["scored", "built by"]  # the first scenario with a score step
    assert writer.startswith("scenario daily_") and writer.endswith(": score")


def test_build_button_builds_training_set_and_shows_each_recipe(studio_copy):
    settings, _ = studio_copy
    at = _open("views/flow.py")
    assert at.selectbox(key="build_target").value == "training_set"
    at.button(key="build").click().run()
    assert not at.exception and not at.error
    assert at.success[0].value.startswith("Built training_set: 4 recipes in")
    runs = _table(at, "recipe")
    recipes = list(runs["recipe"])  # the two inputs of features, in either order, first
    assert set(recipes[:2]) == {"card_profiles", "card_windows"}
    assert recipes[2:] == ["features", "training_set"]
    project = design.open_project(settings, "fraud")
    expected = query_df(f"SELECT count(*) AS n FROM {scan_sql(project.dataset('training_set'))}")
    assert runs["rows"].iloc[-1] == expected["n"].iloc[0] > 0


def test_build_downstream_rebuilds_what_a_change_affects(studio_copy):
    at = _open("views/flow.py")
    at.selectbox(key="build_target").set_value("card_profiles")
    at.radio(key="build_mode").set_value("everything downstream of it").run()
    at.button(key="build").click().run()
    assert not at.exception and not at.error
    runs = _table(at, "recipe")
    assert list(runs["recipe"]) == ["card_profiles", "features", "training_set"]


def test_a_failing_recipe_is_an_error_message_with_its_line(studio_copy):
    settings, _ = studio_copy
    sql = design.open_project(settings, "fraud").root / "recipes" / "training_set.sql"
    sql.write_text("SELECT f.*,\n  no_such_column\nFROM features f")
    at = _open("views/flow.py")
    at.button(key="build").click().run()
    assert not at.exception
    message = _errors(at)
    assert "Build of training_set failed" in message and "training_set.sql" in message
    assert "at line 2 (no_such_column)" in message
    assert not at.success


# --- Projects -----------------------------------------------------------------------------------


def test_an_empty_home_opens_on_projects_and_creates_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NODAL_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("NODAL_DATA_DIR", str(tmp_path / "data"))
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    at.run()
    assert not at.exception
    assert "no project on the design node yet" in at.info[0].value
    assert "nodal project import examples/fraud" in at.info[0].value
    at.switch_page("views/flow.py").run()  # a bookmarked page URL does not break either
    assert not at.exception and at.info
    at.switch_page("views/projects.py").run()
    at.text_input(key="new_project_name").input("shops")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    assert at.title[0].value == "Flow of shops"
    assert (tmp_path / "var" / "design" / "projects" / "shops" / "project.yaml").is_file()


def test_projects_page_lists_projects_and_refuses_a_taken_name(demo_environ):
    at = _open("views/projects.py")
    assert "fraud" in list(_table(at, "created_at")["name"])
    at.text_input(key="new_project_name").input("fraud")
    at.button[1].click().run()
    assert "already exists" in _errors(at)


# --- Datasets -----------------------------------------------------------------------------------

STORES = "store_id,opened,city,monthly_sales\n1,2024-01-05,Austin,1200.5\n2,2024-02-01,Boston,900\n"


def test_import_a_csv_by_path_with_a_corrected_type_then_explore_it(studio_copy, tmp_path):
    settings, _ = studio_copy
    csv = settings.data_dir / tmp_path.name / "stores.csv"  # in the landing zone
    csv.parent.mkdir()
    csv.write_text(STORES)
    at = _open("views/datasets.py")
    at.radio(key="import_source").set_value("A path on the design node").run()
    at.text_input(key="import_path").input(str(csv)).run()
    assert not at.exception and not at.error
    assert "**stores.csv**: 4 columns" in at.markdown[0].value
    at.button(key="import").click().run()
    assert not at.exception and not at.error, _errors(at)
    assert at.success[0].value.startswith("Imported **stores**: 2 rows, 4 columns")
    project = design.open_project(settings, "fraud")
    assert project.datasets["stores"].schema["monthly_sales"] == "DOUBLE"
    # Explore: the new dataset's profile and histogram.
    at.selectbox(key="explore_dataset").set_value("stores").run()
    profile = _table(at, "median").set_index("column")
    assert profile.loc["monthly_sales", "max"] == "1200.5"
    assert at.get("vega_lite_chart")


def test_a_csv_with_a_broken_row_is_refused_with_its_line_and_changes_nothing(
    studio_copy, tmp_path
):
    settings, _ = studio_copy
    before = (design.open_project(settings, "fraud").root / "datasets.yaml").read_text()
    csv = settings.data_dir / tmp_path.name / "broken.csv"  # in the landing zone
    csv.parent.mkdir()
    csv.write_text(STORES + "3,2024-03-01,Dallas,700,surprise\n")
    at = _open("views/datasets.py")
    at.radio(key="import_source").set_value("A path on the design node").run()
    at.text_input(key="import_path").input(str(csv)).run()
    at.button(key="import").click().run()
    assert not at.exception
    message = _errors(at)
    assert "Nothing was imported" in message and "line 4" in message
    project = design.open_project(settings, "fraud")
    assert (project.root / "datasets.yaml").read_text() == before
    assert not (project.data_root / "broken").exists()


def test_a_csv_with_an_unnamed_index_column_is_imported_once_it_is_named(studio_copy, tmp_path):
    """A DataFrame saved with its index (header ",store_id,…"): refused while the first
    column has no name; named (and a column left out) in the schema step, it imports."""
    settings, _ = studio_copy
    csv = settings.data_dir / tmp_path.name / "indexed.csv"  # in the landing zone
    csv.parent.mkdir()
    csv.write_text(
        ",store_id,opened,city,monthly_sales\n"
        "0,1,2024-01-05,Austin,1200.5\n"
        "1,2,2024-02-01,Boston,900\n"
    )
    at = _open("views/datasets.py")
    at.radio(key="import_source").set_value("A path on the design node").run()
    at.text_input(key="import_path").input(str(csv)).run()
    assert "Column 1 has no name" in at.warning[0].value
    at.button(key="import").click().run()
    assert "column 1 has no name" in _errors(at) and "drop it or give it a name" in _errors(at)
    assert "indexed" not in design.open_project(settings, "fraud").datasets

    editor = f"schema_editor::path:{csv}"
    at.session_state[editor] = {
        "edited_rows": {0: {"name": "row_id"}, 3: {"keep": False}, 4: {"name": "sales"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert not at.warning
    at.button(key="import").click().run()
    assert not at.exception and not at.error, _errors(at)
    assert at.success[0].value.startswith("Imported **indexed**: 2 rows, 4 columns")
    dataset = design.open_project(settings, "fraud").datasets["indexed"]
    assert dataset.schema == {
        "row_id": "BIGINT",
        "store_id": "BIGINT",
        "opened": "DATE",
        "sales": "DOUBLE",
    }


def test_uploaded_files_are_removed_after_a_refused_or_a_good_import_and_at_start(
    studio_copy,
):
    settings, _ = studio_copy
    uploads = dataset_import.uploads_dir(settings.home)
    leftover = uploads / "999999999-left"  # a Studio process that no longer exists
    leftover.mkdir(parents=True)
    (leftover / "old.csv").write_text(STORES)

    def staged() -> list[str]:
        return sorted(p.name for p in uploads.glob("*/*"))

    at = _open("views/datasets.py")
    assert not leftover.exists()  # swept when the Studio started
    at.file_uploader(key="upload").set_value(
        ("broken.csv", (STORES + "3,2024-03-01,Dallas,700,surprise\n").encode(), "text/csv")
    ).run()
    assert staged() == ["broken.csv"]
    at.button(key="import").click().run()
    assert "Nothing was imported" in _errors(at)
    assert staged() == []  # refused: the staged copy is gone
    at.run()
    assert staged() == ["broken.csv"]  # still in the uploader: staged again to retry
    at.file_uploader(key="upload").set_value(("stores2.csv", STORES.encode(), "text/csv")).run()
    assert staged() == ["stores2.csv"]  # the replaced upload's copy is gone
    at.button(key="import").click().run()
    assert at.success[0].value.startswith("Imported **stores2**"), _errors(at)
    assert staged() == []
    at.run()
    assert staged() == [] and "was imported" in at.caption[0].value
    assert "stores2" in design.open_project(settings, "fraud").datasets


# --- Recipes ------------------------------------------------------------------------------------


def _new_recipe(at: AppTest, name: str, sql: str) -> None:
    at.text_input(key="new_recipe_name").input(name)
    at.text_input(key="new_recipe_output").input(name)
    at.multiselect(key="inputs::+ New recipe").set_value(["transactions"])
    at.text_area(key="sql::+ New recipe").input(sql).run()


def test_recipe_preview_shows_first_rows_and_schema_and_save_writes_files(studio_copy):
    settings, _ = studio_copy
    at = _open("views/recipes.py")
    _new_recipe(
        at, "big_spends", "SELECT transaction_id, amount\nFROM transactions\nWHERE amount > 100"
    )
    at.button(key="preview").click().run()
    assert not at.exception and not at.error, _errors(at)
    rows = _table(at, "transaction_id")
    assert list(rows.columns) == ["transaction_id", "amount"] and (rows["amount"] > 100).all()
    schema = _table(at, "type")
    assert dict(zip(schema["column"], schema["type"], strict=True)) == {
        "transaction_id": "VARCHAR",
        "amount": "DOUBLE",
    }
    at.button(key="save_recipe").click().run()
    assert not at.error, _errors(at)
    project = design.open_project(settings, "fraud")
    assert project.recipes["big_spends"].output == "big_spends"
    assert "WHERE amount > 100" in (project.root / "recipes" / "big_spends.sql").read_text()


def test_a_recipe_with_a_sql_error_shows_the_failing_line_and_is_not_saved(studio_copy):
    settings, _ = studio_copy
    at = _open("views/recipes.py")
    _new_recipe(at, "broken", "SELECT transaction_id,\n  amount * nope AS x\nFROM transactions")
    at.button(key="preview").click().run()
    assert "at line 2" in _errors(at) and "nope" in _errors(at)
    at.button(key="save_recipe").click().run()
    assert "Not saved" in _errors(at)
    project = design.open_project(settings, "fraud")
    assert "broken" not in project.recipes and not (project.root / "recipes/broken.sql").exists()


PY_RECIPE = """import pandas as pd


def run(inputs, variables):
    cards = inputs["cards"]
    return pd.DataFrame({"card_id": cards["card_id"], "good": cards["credit_score"] > 700})
"""


def test_a_python_recipe_is_previewed_saved_and_built_and_its_errors_show_the_users_line(
    studio_copy,
):
    settings, _ = studio_copy
    at = _open("views/recipes.py")
    at.radio(key="new_recipe_language").set_value("python").run()
    assert "def run(inputs" in at.text_area(key="sql::+ New recipe::python").value  # template
    at.text_input(key="new_recipe_name").input("good_cards")
    at.text_input(key="new_recipe_output").input("good_cards")
    at.multiselect(key="inputs::+ New recipe").set_value(["cards"])
    broken = PY_RECIPE.replace('cards["credit_score"]', 'cards["credit_scor"]')
    at.text_area(key="sql::+ New recipe::python").input(broken).run()
    at.button(key="preview").click().run()
    assert not at.exception, at.exception
    assert "failed at line 6" in _errors(at) and "KeyError" in _errors(at)
    trace = next(c.value for c in at.code if "line 6, in run" in c.value)
    assert "site-packages" not in trace and "engine" not in trace
    at.text_area(key="sql::+ New recipe::python").input(PY_RECIPE).run()
    at.button(key="preview").click().run()
    assert not at.error, _errors(at)
    schema = _table(at, "type")
    assert dict(zip(schema["column"], schema["type"], strict=True)) == {
        "card_id": "VARCHAR",
        "good": "BOOLEAN",
    }
    at.button(key="save_and_build").click().run()
    assert not at.error, _errors(at)
    assert "recipes/good_cards.py" in at.success[0].value
    assert at.success[1].value.startswith("Built good_cards (")
    project = design.open_project(settings, "fraud")
    assert (project.root / "recipes" / "good_cards.py").read_text() == PY_RECIPE
    cards = ds.read_df(project.dataset("cards"))
    assert len(ds.read_df(project.dataset("good_cards"))) == len(cards)


def test_a_second_save_of_the_same_recipe_is_refused_and_shown_the_difference(studio_copy):
    settings, _ = studio_copy
    at = _open("views/recipes.py")
    at.selectbox(key="recipe_choice").set_value("training_set").run()
    # Another analyst saves the same recipe meanwhile.
    project = design.open_project(settings, "fraud")
    theirs = project.recipes["training_set"].sql.replace("SELECT f.*", "SELECT f.*, 1 AS theirs")
    definitions.save(project.root, {"recipes/training_set.sql": theirs})
    ours = at.text_area(key="sql::training_set").value.replace(
        "SELECT f.*", "SELECT f.*, 2 AS ours"
    )
    at.text_area(key="sql::training_set").input(ours).run()
    at.button(key="save_recipe").click().run()
    assert not at.exception
    assert "changed by someone else" in _errors(at)
    diff = at.code[0].value
    assert "-SELECT f.*, 1 AS theirs" in diff and "+SELECT f.*, 2 AS ours" in diff
    assert (project.root / "recipes/training_set.sql").read_text() == theirs


# --- Lab ----------------------------------------------------------------------------------------


def _wait_for_training(at: AppTest) -> None:
    job = lab_jobs.get_job(at.session_state["lab_job"])
    job.thread.join(timeout=300)
    at.run()


def test_lab_trains_with_progress_shows_results_and_deploys(studio_copy):
    settings, _ = studio_copy
    at = _open("views/lab.py")
    assert at.selectbox(key="lab_dataset").value == "training_set"
    at.button(key="train").click().run()
    assert not at.exception and not at.error, _errors(at)
    _wait_for_training(at)
    assert not at.exception, at.exception
    tiles = {t.label: t.value for t in at.metric}
    project = design.open_project(settings, "fraud")
    run = lab.list_runs(project, "fraud_model")[0]
    assert tiles["ROC AUC"] == f"{run['metrics']['roc_auc']:.3f}"
    best = run["best_possible"]
    assert best and best["auc"] > run["metrics"]["roc_auc"] - 0.02  # truth beats (or ties) a model
    assert tiles["Best possible AUC"] == f"{best['auc']:.3f}"
    charts = {c.proto.spec for c in at.get("vega_lite_chart")}
    assert len(charts) >= 4  # ROC, PR, importance, calibration (+ comparison)
    confusion = _table(at, "predicted positive")
    assert int(confusion.to_numpy().sum()) == run["metrics"]["validation_rows"]
    before = project.active_model_version("fraud_model")
    at.button(key="deploy").click().run()
    assert not at.error, _errors(at)
    versions = models.list_versions(design.open_project(settings, "fraud"), "fraud_model")
    assert versions[0]["active"] and versions[0]["version"] != before
    assert versions[0]["lab_run"] == run["run_id"]


def _add_managed(settings, name: str, sql: str) -> None:  # noqa: ANN001
    """Add a managed dataset ``name`` holding ``sql``'s rows to the fraud project."""
    project = design.open_project(settings, "fraud")
    ds.write(ds.DatasetRef(name, project.data_root / name), query_df(sql))
    definitions.update(
        project.root,
        lambda cur: {"datasets.yaml": cur["datasets.yaml"] + f"{name}:\n  kind: managed\n"},
        paths=["datasets.yaml"],
    )


def test_lab_refuses_a_target_with_one_class(studio_copy):
    settings, _ = studio_copy
    _add_managed(settings, "one_class", "SELECT range AS x, 0 AS y FROM range(200)")
    at = _open("views/lab.py")
    at.selectbox(key="lab_dataset").set_value("one_class").run()
    at.selectbox(key="lab_target::one_class").set_value("y").run()
    at.radio(key="lab_split").set_value("random").run()
    at.button(key="train").click().run()
    _wait_for_training(at)
    assert "has only one class" in _errors(at)
    assert not lab.list_runs(design.open_project(settings, "fraud"), "one_class_model")


INTERRUPTED_CHILD = """
import json, sys, time
from engine.design import lab, lab_jobs
from engine.design.projects import open_project
from engine.core.settings import load_settings

lab.train = lambda *args, **kwargs: time.sleep(600)  # killed mid-training, as on a restart
settings = load_settings(environ={}, home=sys.argv[1], data_dir=sys.argv[2], basemap="none")
job = lab_jobs.start(open_project(settings, "fraud"), lab.LabSpec(**json.loads(sys.argv[3])), "ann")
print(job.job_id, flush=True)
time.sleep(600)
"""


def test_lab_offers_to_train_again_a_training_a_restart_interrupted(studio_copy):
    import json
    import subprocess
    import sys

    settings, _ = studio_copy
    _add_managed(settings, "tiny", "SELECT range AS x, (range % 3 = 0)::INT AS y FROM range(300)")
    spec = dict(
        dataset="tiny",
        target="y",
        features=["x"],
        model="tiny_model",
        algorithm="logistic_regression",
        split="random",
        time_column=None,
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            INTERRUPTED_CHILD,
            str(settings.home),
            str(settings.data_dir),
            json.dumps(spec),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = child.stdout.readline().strip()
        assert job_id
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    at = _open("views/lab.py")
    warning = at.warning[0].value
    assert "tiny_model" in warning and "was interrupted" in warning and "restart" in warning
    at.button(key=f"lab_again::{job_id}").click().run()
    assert not at.exception, at.exception
    job = lab_jobs.get_job(at.session_state["lab_job"])
    assert job.spec == lab.LabSpec(**spec)
    _wait_for_training(at)
    assert not at.warning and not at.error, _errors(at)
    assert lab.list_runs(design.open_project(settings, "fraud"), "tiny_model")
    assert lab_jobs.interrupted_jobs(design.open_project(settings, "fraud")) == []


# --- Saved models -------------------------------------------------------------------------------


def test_model_page_shows_the_active_versions_metrics(demo_environ):
    at = _open("views/model.py")
    versions = models.list_versions(demo_environ.project, "fraud_model")
    active = next(v for v in versions if v["active"])
    m = active["metrics"]
    tiles = {t.label: t.value for t in at.metric}
    assert tiles["ROC AUC"] == f"{m['roc_auc']:.3f}"
    assert tiles["PR AUC"] == f"{m['pr_auc']:.3f}"
    assert tiles["Recall at 1% FPR"] == f"{m['recall_at_fpr']:.1%}"
    assert tiles["Threshold"] == f"{m['threshold']:.3f}"
    assert f"Validated on {active['validation_days'][0]} to {active['validation_days'][1]}" in (
        at.caption[0].value
    )
    table = at.dataframe[0].value
    assert list(table["version"]) == [v["version"] for v in versions]
    assert list(table["active"]) == [v["active"] for v in versions]


# --- Metrics and checks -------------------------------------------------------------------------


def _add_check(at: AppTest, **fields: str) -> None:
    for key, value in fields.items():
        widget = (
            at.selectbox(key=key)
            if key in ("check_type", "check_column")
            else at.text_input(key=key)
        )
        widget.set_value(value)
    at.button[2].click().run()  # "Add check" (forms: add metric, add check)


def test_checks_page_refuses_a_check_on_a_missing_column(studio_copy):
    settings, _ = studio_copy
    before = (design.open_project(settings, "fraud").root / "checks.yaml").read_text()
    at = _open("views/checks.py")
    spec = {"name": "ghost", "type": "value_in_set", "column": "no_such_column", "values": ["a"]}
    from engine.project import checks

    with pytest.raises(checks.CheckError, match="has no column 'no_such_column'"):
        checks.add_check(design.open_project(settings, "fraud"), "transactions", spec)
    # In the page, the column list only offers real columns; a metric check with no bound is
    # refused with a message.
    _add_check(at, check_name="no_bounds", check_type="metric_bounds")
    assert "Not added" in _errors(at)
    assert (design.open_project(settings, "fraud").root / "checks.yaml").read_text() == before


def test_checks_page_adds_a_check_runs_it_and_keeps_history(studio_copy):
    settings, _ = studio_copy
    at = _open("views/checks.py")
    _add_check(
        at,
        check_name="channels_known",
        check_type="value_in_set",
        check_column="channel",
        check_values="online,in_store,contactless",
    )
    assert not at.error, _errors(at)
    checks_yaml = yaml.safe_load(
        (design.open_project(settings, "fraud").root / "checks.yaml").read_text()
    )
    assert {"channels_known", "columns_unchanged"} <= {
        c["name"] for c in checks_yaml["transactions"]
    }
    at = _open("views/checks.py")
    at.button(key="run_checks").click().run()
    assert not at.exception and not at.error, _errors(at)
    results = _table(at, "outcome").set_index("name")
    assert results.loc["channels_known", "outcome"] == "OK"
    assert set(results.index) == {c["name"] for c in checks_yaml["transactions"]}
    history = _table(at, "check_name")
    assert "channels_known" in set(history["check_name"])


# --- Scenarios ----------------------------------------------------------------------------------


def test_scenarios_page_refuses_an_invalid_scenario_and_changes_nothing(studio_copy):
    settings, _ = studio_copy
    path = design.open_project(settings, "fraud").root / "scenarios" / "daily_scoring.yaml"
    before = path.read_text()
    at = _open("views/scenarios.py")
    at.selectbox(key="scenario_choice").set_value("daily_scoring").run()
    broken = before.replace("type: run_checks", "type: no_such_step")
    at.text_area(key="scenario_text::daily_scoring").input(broken).run()
    at.button(key="save_scenario").click().run()
    assert "Not saved" in _errors(at)
    assert any("no_such_step" in m.value for m in at.markdown)
    assert path.read_text() == before


def test_scenarios_page_runs_a_scenario_on_the_design_node_and_shows_its_steps(studio_copy):
    settings, store = studio_copy
    at = _open("views/scenarios.py")
    at.selectbox(key="scenario_choice").set_value("daily_scoring").run()
    at.button(key="run_scenario").click().run()
    assert not at.error, _errors(at)
    run_id = at.session_state["design_scenario_run"]
    deadline = time.monotonic() + 120
    while runs.get_run(store, run_id)["status"] in ("QUEUED", "RUNNING"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    at.run()
    assert not at.exception
    run = runs.get_run(store, run_id)
    assert run["status"] == "SUCCESS", run
    steps = _table(at, "step")
    assert list(steps["step"]) == [s["name"] for s in run["steps"]]
    assert set(steps["status"]) == {"SUCCESS"}
    # The design node now has scored data: the dashboard preview shows it.
    at = _open("views/dashboards.py")
    at.selectbox(key="dashboard_choice").set_value("fraud_map").run()
    assert not at.exception
    assert "flagged" in " ".join(m.value for m in at.markdown)
    assert at.get("vega_lite_chart")


# --- Dashboards ---------------------------------------------------------------------------------


def test_dashboards_page_saves_threshold_and_layers_keeping_the_file_readable(studio_copy):
    settings, _ = studio_copy
    at = _open("views/dashboards.py")
    at.selectbox(key="dashboard_choice").set_value("fraud_map").run()
    assert "no data on the design node yet" in at.info[0].value
    at.number_input(key="db_threshold::fraud_map").set_value(0.4)
    at.multiselect(key="db_layers::fraud_map").set_value(["points", "hexagons"])
    at.button[0].click().run()
    assert not at.error, _errors(at)
    doc = yaml.safe_load(
        (design.open_project(settings, "fraud").root / "dashboards" / "fraud_map.yaml").read_text()
    )
    assert doc["threshold"] == 0.4 and doc["layers"] == ["points", "hexagons"]
    assert doc["source"] == "scored" and doc["output"] == "fraud_map"


# --- Bundles ------------------------------------------------------------------------------------


def test_bundles_page_refuses_a_used_id_and_creates_a_bundle_with_data(studio_copy):
    settings, store = studio_copy
    at = _open("views/bundles.py")
    before = bundles.list_bundles(store, "fraud")
    v1_bytes = bundles.get_bundle(store, "fraud", "v1").path.read_bytes()
    at.text_input(key="bundle_id").input("v1")
    at.button(key="create_bundle").click().run()
    assert "already used" in _errors(at)
    assert bundles.list_bundles(store, "fraud") == before  # nothing changed
    assert bundles.get_bundle(store, "fraud", "v1").path.read_bytes() == v1_bytes
    at.text_input(key="bundle_id").input("v2")
    at.text_input(key="bundle_notes").input("with the training set")
    at.multiselect(key="bundle_datasets").set_value(["training_set"])
    at.button(key="create_bundle").click().run()
    assert not at.error, _errors(at)
    manifest = bundles.verify_bundle(bundles.get_bundle(store, "fraud", "v2").path)
    assert manifest["datasets"]["training_set"]["rows"] > 0
    at = _open("views/bundles.py")
    assert list(_table(at, "release notes")["bundle"])[:2] == ["v2", "v1"]
    data = _table(at, "dataset")
    assert list(data["dataset"]) == ["training_set"]


def test_bundles_page_reverts_the_project_to_a_bundle(studio_copy):
    settings, _ = studio_copy
    project = design.open_project(settings, "fraud")
    original = (project.root / "flow.yaml").read_text()
    (project.root / "flow.yaml").write_text(original.replace("recipes:", "# edited\nrecipes:"))
    at = _open("views/bundles.py")
    at.checkbox(key="revert_sure").check().run()
    at.button(key="revert").click().run()
    assert not at.error, _errors(at)
    assert (project.root / "flow.yaml").read_text() == original
