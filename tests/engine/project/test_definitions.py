"""Safe saves of definitions: optimistic concurrency, validation, comment-keeping edits."""

from __future__ import annotations

import threading

import pytest
import yaml

from engine.core import yamltext
from engine.project import checks, definitions
from engine.project.project import ProjectError
from tests.conftest import EXAMPLE
from tests.engine.small_project import make_small


def test_a_second_save_from_the_same_version_is_refused_with_the_difference(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    root = small.project().root
    text, version = definitions.read(root, "flow.yaml")
    definitions.save(root, {"flow.yaml": text + "# Ann's note\n"}, base={"flow.yaml": version})
    with pytest.raises(definitions.DefinitionConflict) as caught:
        definitions.save(root, {"flow.yaml": text + "# Bob's note\n"}, base={"flow.yaml": version})
    assert "+# Bob's note" in caught.value.diff and "-# Ann's note" in caught.value.diff
    assert (root / "flow.yaml").read_text().endswith("# Ann's note\n")


def test_a_save_that_breaks_the_project_is_refused_and_changes_nothing(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    root = small.project().root
    before = (root / "flow.yaml").read_text()
    broken = "recipes:\n  r:\n    sql: recipes/missing.sql\n    inputs: {}\n    output: nope\n"
    with pytest.raises(ProjectError, match="missing.sql"):
        definitions.save(root, {"flow.yaml": broken})
    assert (root / "flow.yaml").read_text() == before


def test_structured_edits_by_two_analysts_at_once_both_land(tmp_path):
    small = make_small(tmp_path)
    errors = []

    def add(name: str, city: str) -> None:
        try:
            spec = {"name": name, "type": "value_in_set", "column": "city", "values": [city]}
            checks.add_check(small.project(), "shops", spec)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f"c{i}", f"city{i}")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    names = {c["name"] for c in small.project().checks["shops"]}
    assert names == {f"c{i}" for i in range(6)}


def test_yaml_edits_keep_comments_and_other_entries():
    text = (EXAMPLE / "checks.yaml").read_text()
    existing = yaml.safe_load(text)["transactions"]
    edited = yamltext.set_entry(text, "transactions", [*existing, {"name": "n", "type": "t"}])
    edited = yamltext.set_entry(edited, "labels", [{"name": "m", "type": "t"}])
    assert edited.startswith(text.splitlines()[0])  # the header comment is still there
    doc = yaml.safe_load(edited)
    assert [c["name"] for c in doc["transactions"]][-1] == "n" and doc["labels"][0]["name"] == "m"
    flow = (EXAMPLE / "flow.yaml").read_text()
    added = yamltext.set_entry(flow, "extra", {"sql": "recipes/x.sql", "output": "x"}, "recipes")
    assert (
        added.startswith(flow.rstrip("\n"))
        and yaml.safe_load(added)["recipes"]["extra"]["output"] == "x"
    )
    assert yamltext.remove_entry(added, "extra", "recipes").strip() == flow.strip()
