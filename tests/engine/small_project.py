"""A small, fast design-node project for the design engine's tests (no example data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.core.settings import Settings, load_settings
from engine.design import dataset_import
from engine.design import projects as design
from engine.project.project import Project
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, open_store
from tests.homes import seed_test_actors

SHOPS_CSV = (
    "shop_id,opened,city,monthly_sales,channel\n"
    "1,2024-01-05,Austin,1200.5,online\n"
    "2,2024-01-05,Boston,900,store\n"
    "3,2024-01-06,Austin,310.25,store\n"
    "4,2024-01-07,Denver,,online\n"
)


@dataclass
class Small:
    settings: Settings
    store: ControlStore
    root: Path

    def project(self) -> Project:
        return design.open_project(self.settings, "shop")


def make_small(tmp: Path, with_shops: bool = True) -> Small:
    settings = load_settings(environ={}, home=tmp / "var", data_dir=tmp / "data", basemap="none")
    store = open_store(settings.control_store_url)
    seed_test_actors(store)
    design.create_project(settings, store, "shop", "test project", actor="test")
    small = Small(settings, store, tmp)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the landing zone
    if with_shops:
        csv = settings.data_dir / "shops.csv"  # files are imported from the landing zone
        csv.write_text(SHOPS_CSV)
        dataset_import.import_file(small.project(), "shops", csv, partition_column="opened")
    return small


def synthetic_labels(
    n: int = 4000, days: int = 10, seed: int = 3
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with a numeric and a categorical feature, a day and a 0/1 label; and the truth."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    cat = rng.choice(["a", "b", "c"], size=n)
    logit = 2.0 * x + np.select([cat == "a", cat == "b"], [1.0, -1.0], 0.0) - 2.5
    proba = 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "transaction_id": [f"T{i:06d}" for i in range(n)],
            "x": x,
            "cat": cat,
            "day": pd.to_datetime("2026-01-01") + pd.to_timedelta(np.arange(n) % days, unit="D"),
            "is_fraud": (rng.random(n) < proba).astype(int),
        }
    )
    frame["day"] = frame["day"].dt.date
    return frame, proba


def add_labelled(
    small: Small, name: str = "labelled", with_truth: bool = True, declare: bool = True
) -> pd.DataFrame:
    """A managed dataset ``name`` of synthetic labelled rows.

    ``with_truth``: the generator's true probabilities too, as the source dataset ``truth``
    in the landing zone; ``declare``: and the definition of model ``risk`` (trained on
    ``name``, not yet trained) that declares them (``best_possible:``) for the Lab.
    """
    frame, proba = synthetic_labels()
    project = small.project()
    ds.write(ds.DatasetRef(name, project.data_root / name), frame)
    text = (project.root / "datasets.yaml").read_text() + f"{name}:\n  kind: managed\n"
    if with_truth:
        truth = pd.DataFrame(
            {
                "transaction_id": frame["transaction_id"],
                "true_fraud_proba": proba,
                "day": frame["day"].astype(str),
            }
        )
        ds.write(ds.DatasetRef("truth", small.settings.data_dir / "truth", "day"), truth)
        text += 'truth:\n  kind: source\n  path: "{data_dir}/truth"\n  partitioned_by: day\n'
    (project.root / "datasets.yaml").write_text(text)
    if with_truth and declare:
        (project.root / "models").mkdir(exist_ok=True)
        (project.root / "models" / "risk.yaml").write_text(
            f"name: risk\ntrain_on: {name}\ntarget: is_fraud\ntime_column: day\n"
            "id_column: transaction_id\n"
            "best_possible: {dataset: truth, probability: true_fraud_proba}\n"
            "features: {numeric: [x], categorical: [cat]}\n"
        )
    return frame


# --- a deployed project in another vocabulary: insurance claims -------------------------------
#
# Nothing in it is named like the fraud example: its rows are claims (``claim_ref``), booked
# on ``booked_on`` (the partition), at a site (``site_lat``/``site_lon``, in France), paid
# ``payout``; its delayed labels are ``outcomes.confirmed_fraud``, partitioned by the day
# they became known. Its model and its two maps declare those names; the platform's
# evaluation and map must work from the declarations alone.

CLAIMS_PROJECT, CLAIMS_INFRA, CLAIMS_TEST_INFRA = "claims", "claims-prod", "claims-test"
CLAIMS_DAYS = 16
CLAIMS_FILES = {
    "project.yaml": "name: claims\ndescription: Suspicious insurance claims.\nvariables:\n  day: latest\n",
    "datasets.yaml": """\
claims: {kind: source, path: "{data_dir}/claims", partitioned_by: booked_on}
outcomes: {kind: source, path: "{data_dir}/outcomes", partitioned_by: known_on}
history: {kind: managed}
scores: {kind: managed, partitioned_by: booked_on}
claims_map: {kind: managed, partitioned_by: booked_on}
payout_map: {kind: managed, partitioned_by: booked_on}
""",
    "flow.yaml": """\
recipes:
  history:
    sql: recipes/history.sql
    inputs: {claims: all, outcomes: all}
    output: history
""",
    "recipes/history.sql": (
        "SELECT c.*, o.confirmed_fraud FROM claims c JOIN outcomes o USING (claim_ref)\n"
    ),
    "models/claim_risk.yaml": """\
name: claim_risk
train_on: history
target: confirmed_fraud
time_column: booked_on
id_column: claim_ref
validation_days: 4
operating_fpr: 0.05
monitoring:
  labels: outcomes
  location: [site_lat, site_lon]
  amount: payout
  unseen_ids: [adjuster]
features:
  numeric: [x1, payout]
  categorical: [branch]
params: {objective: binary, learning_rate: 0.1, num_leaves: 15, min_data_in_leaf: 20,
         num_boost_round: 60, early_stopping_rounds: 10, seed: 1}
""",
    "dashboards/claims_map.yaml": """\
name: claims_map
type: map
title: Suspicious claims by site
source: scores
output: claims_map
columns: [claim_ref, booked_at, site_lat, site_lon, payout, branch, adjuster, proba,
          is_flagged]
roles: {latitude: site_lat, longitude: site_lon, id: claim_ref, time: booked_at,
        amount: payout, category: branch}
filters: [branch]
details: [adjuster]
labels: {rows: Claims, flagged: Suspicious, score: risk, currency: "€"}
""",
    "dashboards/payout_map.yaml": """\
name: payout_map
type: map
title: Risky payouts
source: scores
output: payout_map
columns: [site_lat, site_lon, proba]
roles: {latitude: site_lat, longitude: site_lon}
threshold: 0.3
""",
    "scenarios/nightly.yaml": """\
name: nightly
steps:
  - {name: score, type: score, model: claim_risk, input: claims, output: scores}
  - {name: publish, type: publish_dashboard, dashboard: claims_map}
  - {name: evaluate, type: evaluate, model: claim_risk, input: scores}
""",
    "scenarios/payouts.yaml": """\
name: payouts
steps:
  - {name: score, type: score, model: claim_risk, input: claims, output: scores}
  - {name: publish, type: publish_dashboard, dashboard: payout_map}
""",
}


@dataclass
class Claims:
    settings: Settings
    store: ControlStore
    days: list[str]  # every booked day, oldest first
    nightly_days: list[str]  # published to claims_map (and evaluated)
    payout_day: str  # published to payout_map only: the newest published day

    def node_project(self) -> Project:
        from engine.automation.node import AutomationNode

        return AutomationNode(self.settings, self.store, CLAIMS_INFRA).project(CLAIMS_PROJECT)


def claims_data(
    data_dir: Path, days: int = CLAIMS_DAYS, per_day: int = 400, seed: int = 5
) -> list[str]:
    """The landing zone of the claims project; returns its days."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    day_index = np.repeat(np.arange(days), per_day)
    start = pd.Timestamp("2026-03-01")
    booked = start + pd.to_timedelta(day_index, unit="D")
    branch = rng.choice(["north", "south", "east", "west"], size=n)
    x1 = rng.normal(size=n)
    logit = 2.2 * x1 + np.where(branch == "east", 1.0, 0.0) - 3.0
    fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    claims = pd.DataFrame(
        {
            "claim_ref": [f"CL{i:06d}" for i in range(n)],
            "booked_at": booked + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
            "site_lat": 46.5 + rng.normal(scale=1.5, size=n),
            "site_lon": 2.5 + rng.normal(scale=2.0, size=n),
            "payout": np.round(rng.lognormal(7, 0.8, size=n), 2),
            "branch": branch,
            "adjuster": rng.choice([f"A{i:02d}" for i in range(20)], size=n),
            "x1": x1,
            "booked_on": booked.strftime("%Y-%m-%d"),
        }
    )
    ds.write(ds.DatasetRef("claims", data_dir / "claims", "booked_on"), claims)
    # Outcomes become known two days after the claim; none is known after the last day.
    known = booked + pd.Timedelta(days=2)
    outcomes = pd.DataFrame(
        {
            "claim_ref": claims["claim_ref"],
            "confirmed_fraud": fraud,
            "known_on": known.strftime("%Y-%m-%d"),
        }
    )[known <= booked.max()]
    ds.write(ds.DatasetRef("outcomes", data_dir / "outcomes", "known_on"), outcomes)
    return sorted(claims["booked_on"].unique().tolist())


def make_claims(tmp: Path) -> Claims:
    """The claims project designed, trained, bundled, deployed to two automation nodes, and
    run on the first: ``nightly`` (score, publish claims_map, evaluate) on four days, then
    ``payouts`` (score, publish payout_map) on the newest day."""
    from engine.automation import runs
    from engine.automation.node import AutomationNode
    from engine.deployer import bundles
    from engine.deployer import deployments as deployer
    from engine.models import saved as models
    from engine.project import flow

    settings = load_settings(environ={}, home=tmp / "var", data_dir=tmp / "data", basemap="none")
    store = open_store(settings.control_store_url)
    seed_test_actors(store)
    days = claims_data(settings.data_dir)
    source = tmp / "claims_project"
    for rel, text in CLAIMS_FILES.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(text)
    project = design.import_project(settings, store, source, actor="test")
    flow.build(project, "history")
    models.train(project, "claim_risk", "ann")
    bundles.create_bundle(settings.home, store, project, "c1", "claims, first", "ann")
    for infra, stage in ((CLAIMS_INFRA, "prod"), (CLAIMS_TEST_INFRA, "test")):
        deployer.create_infra(store, infra, "automation", stage, exist_ok=True, actor="test")
        deployer.deploy_bundle(store, CLAIMS_PROJECT, "c1", infra, "ann")
        AutomationNode(settings, store, infra).sync()
    node = AutomationNode(settings, store, CLAIMS_INFRA)
    nightly_days, payout_day = days[-5:-1], days[-1]
    for scenario, day in [*(("nightly", d) for d in nightly_days), ("payouts", payout_day)]:
        run_id = runs.request_run(
            store, CLAIMS_INFRA, CLAIMS_PROJECT, scenario, "test", {"day": day}
        )
        outcome = node.run(run_id)
        assert outcome in (runs.SUCCESS, runs.WARNING), runs.get_run(store, run_id)
    return Claims(settings, store, days, nightly_days, payout_day)
