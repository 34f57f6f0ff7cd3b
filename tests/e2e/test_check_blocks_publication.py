"""A new kind of check, added with the real ``nodal`` CLI, fails on a day with a bad row and
keeps that day's map from being published; a learned check's result is accepted as the new
baseline from the CLI.

The demo's home is copied; the landing zone gets one more day in which one transaction has
a negative amount. ``nodal check add … --type in_range`` declares the rule on the design
node, the project is bundled and deployed, and the automation node runs the real
``daily_scoring`` scenario on that day.
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.storage.control import check_results, published_days
from nodal_demo import datagen, demo
from tests.conftest import SMALL
from tests.e2e import procs
from tests.homes import copy_home


def test_a_check_added_from_the_cli_fails_the_run_and_blocks_publication(demo_env, tmp_path):
    data_dir = tmp_path / "data"
    summary = datagen.generate(dataclasses.replace(SMALL, n_days=SMALL.n_days + 1), data_dir)
    day = summary.days[-1]
    path = next((data_dir / "transactions" / f"day={day}").glob("*.parquet"))
    table = pq.read_table(path)
    amounts = table.column("amount").to_pylist()
    amounts[3] = -42.5
    table = table.set_column(
        table.schema.get_field_index("amount"), "amount", pa.array(amounts, pa.float64())
    )
    pq.write_table(table, path)

    settings, store = copy_home(demo_env.settings, tmp_path)
    settings = dataclasses.replace(settings, data_dir=data_dir)
    env = {
        "NODAL_HOME": str(settings.home),
        "NODAL_DATA_DIR": str(data_dir),
        "NODAL_USER": "ann",
        "NODAL_BASEMAP": "none",
    }
    added = procs.nodal(
        [
            "check",
            "add",
            "transactions",
            "--name",
            "amount_not_negative",
            "--type",
            "in_range",
            "--column",
            "amount",
            "--min",
            "0",
            "--project",
            demo.PROJECT,
        ],
        env,
    )
    assert added.returncode == 0, added.stderr
    refused = procs.nodal(
        [
            "check",
            "add",
            "transactions",
            "--name",
            "sneaky",
            "--type",
            "row_condition",
            "--expression",
            "amount > (SELECT 0)",
            "--project",
            demo.PROJECT,
        ],
        env,
    )
    assert refused.returncode == 2 and "subqueries" in refused.stderr
    assert "Traceback" not in refused.stderr
    ran = procs.nodal(
        ["check", "run", "transactions", "--partition", day, "--project", demo.PROJECT], env
    )
    assert ran.returncode == 1 and "1 row: amount outside >= 0, e.g. -42.5" in ran.stdout

    project = design.open_project(settings, demo.PROJECT)
    bundles.create_bundle(settings.home, store, project, "with-amount", "amount check", "ann")
    deployer.deploy_bundle(store, demo.PROJECT, "with-amount", demo.AUTOMATION_INFRA, "ann")
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    run_id = runs.request_run(
        store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "test", {"day": day}
    )
    assert node.run(run_id) == runs.FAILED
    steps = {s["name"]: s for s in runs.get_run(store, run_id)["steps"]}
    assert steps["check_incoming"]["status"] == runs.FAILED
    assert (
        "amount_not_negative: ERROR (1 row: amount outside >= 0"
        in steps["check_incoming"]["message"]
    )
    assert steps["publish_map"]["status"] == "SKIPPED"
    with store.read() as conn:
        published = {r[0] for r in conn.execute(sa.select(published_days.c.day))}
        (details,) = conn.execute(
            sa.select(check_results.c.details).where(
                check_results.c.run_id == run_id,
                check_results.c.check_name == "amount_not_negative",
            )
        ).one()
    assert day not in published and published  # earlier days were published
    details = json.loads(details)
    assert (details["kind"], details["column"], details["failing_rows"]) == (
        "in_range",
        "amount",
        1,
    )
    assert details["examples"] == ["-42.5"]

    # "Accept as the new baseline" from the CLI, recorded with who accepted it.
    accepted = procs.nodal(
        [
            "check",
            "accept",
            "transactions",
            "distinct_merchants_in_typical_range",
            "--partition",
            day,
            "--project",
            demo.PROJECT,
        ],
        env,
    )
    assert accepted.returncode == 0, accepted.stderr
    assert f"partition {day}" in accepted.stdout and "baseline by ann" in accepted.stdout
    not_learned = procs.nodal(
        [
            "check",
            "accept",
            "transactions",
            "amount_not_negative",
            "--partition",
            day,
            "--project",
            demo.PROJECT,
        ],
        env,
    )
    assert not_learned.returncode == 2 and "only checks learned from history" in not_learned.stderr
