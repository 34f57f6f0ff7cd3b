"""Published enrichments (fresh lookup rows, and windows outputs' window state, for API
nodes): ``nodal enrichment publish|list|age``."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.common import add, add_project, print_rows, project_name, store
from engine.core.settings import Settings


def cmd_publish(s: Settings, a: argparse.Namespace) -> int:
    """Publish by hand what a ``publish_enrichment`` step publishes, from an automation
    node's data, as NODAL_USER (the ``run`` right on that node): a dataset's rows, or a
    windows output's window state through ``--day`` (default: its newest built day)."""
    from engine.automation.node import AutomationNode
    from engine.deployer import deployments as deployer
    from engine.deployer import enrichments
    from engine.project import windows
    from engine.storage.objects import open_store as open_objects

    control = store(s)
    infra = deployer.get_infra(control, a.infra)
    if infra["kind"] != "automation":
        raise enrichments.EnrichmentError(
            f"{a.infra} is an {infra['kind']} node: publish from an automation node's data"
        )
    name = project_name(s, a)
    project = AutomationNode(s, control, a.infra).project(name)  # ProjectError if inactive
    if a.dataset in windows.declared(project):  # a windows output: its window state
        if a.service or a.rows:
            raise enrichments.EnrichmentError(
                f"{a.dataset} is a windows output: its window state is published (--day), "
                "not rows (no --service or --rows)"
            )
        pub = enrichments.publish_window_state_by_hand(
            open_objects(s), control, project, a.dataset, a.day, node=a.infra, actor=s.user
        )
        print(
            f"published {pub.dataset} v{pub.version} (window state through {pub.as_of}, "
            f"{pub.n_rows} events, stage {pub.stage or '-'}, by {pub.published_by})"
        )
        return 0
    if a.day:
        raise enrichments.EnrichmentError(
            f"--day is for a windows output; {a.dataset} publishes its rows (--service/--rows)"
        )
    if a.service and a.rows:
        raise enrichments.EnrichmentError("give --service or --rows, not both")
    selections = (
        enrichments.selections_for(project, a.dataset, a.service) if a.service else [a.rows]
    )
    for rows in selections:
        pub = enrichments.publish_by_hand(
            open_objects(s),
            control,
            project,
            a.dataset,
            rows or "latest_day",
            node=a.infra,
            actor=s.user,
        )
        print(
            f"published {pub.dataset} v{pub.version} ({pub.rows_selection}, as of "
            f"{pub.as_of or '-'}, {pub.n_rows} rows, stage {pub.stage or '-'})"
        )
    return 0


def cmd_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import enrichments

    rows = [
        {
            "project": p.project,
            "dataset": p.dataset,
            "version": f"v{p.version}",
            "rows": p.rows_selection,
            "as_of": p.as_of or "",
            "n_rows": p.n_rows,
            "stage": p.stage,
            "node": p.node,
            "by": p.published_by,
            "published_at": p.published_at[:19],
        }
        for p in enrichments.versions(store(s), a.project, a.dataset, limit=a.limit)
    ]
    print_rows(rows, list(rows[0]) if rows else [])
    return 0


def cmd_age(s: Settings, a: argparse.Namespace) -> int:
    from engine.monitoring import enrichment_age

    frame = enrichment_age.frame(enrichment_age.ages(store(s), a.infra, a.service))
    rows = frame.drop(columns=["why"]).fillna("").to_dict("records")
    print_rows(rows, list(frame.columns.drop("why")))
    for why in frame["why"]:
        print(f"- {why}")
    return 1 if (frame["status"] != "HEALTHY").any() else 0


def register(top: Any) -> None:
    grp = top.add_parser(
        "enrichment", help="fresh lookup rows for API nodes without a new package"
    ).add_subparsers(dest="cmd", required=True)
    p = add(
        grp,
        "publish",
        cmd_publish,
        "Publish the newest rows of a dataset API endpoints look up, from an automation "
        "node's data, as a new version the API nodes of its stage serve within "
        "NODAL_POLL_SECONDS; for a windows output, its window state instead: the events of "
        "its longest window before the end of --day, which API nodes replay into their "
        "online store at their next poll. What a publish_enrichment step does; needs the run "
        "right on the node; recorded (and audited) as NODAL_USER.",
    )
    p.add_argument("dataset", help="a dataset endpoints look up, or a windows output")
    p.add_argument("--infra", required=True, help="the automation node whose data to publish")
    p.add_argument("--service", help="the API service whose endpoints say which rows")
    p.add_argument("--rows", choices=["latest_day", "all"], help="without --service")
    p.add_argument(
        "--day",
        metavar="YYYY-MM-DD",
        help="windows output only: publish the state through the end of this day (default: "
        "the newest day it was built for; a day it was not built for is refused)",
    )
    add_project(p)
    p = add(grp, "list", cmd_list, "Published versions, newest first.")
    p.add_argument("--project", metavar="NAME")
    p.add_argument("--dataset")
    p.add_argument("--limit", type=int, default=50)
    p = add(
        grp,
        "age",
        cmd_age,
        "What each API deployment serves and how old it is; exit 1 if any is stale.",
    )
    p.add_argument("--infra", help="one API node")
    p.add_argument("--service")
