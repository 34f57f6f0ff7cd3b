"""``bundle revert`` writes only inside the project: a path a bundle names that would leave
it (``..``, absolute) is refused, with the check extraction uses, before anything is written."""

from __future__ import annotations

import pytest

from engine.deployer import bundles
from engine.design import bundle_contents as bc
from engine.project.project import definition_files
from tests.engine.small_project import make_small


def _definitions(project) -> dict[str, bytes]:
    return {str(rel): (project.root / rel).read_bytes() for rel in definition_files(project.root)}


@pytest.mark.parametrize(
    ("extra", "contents"),
    [
        # a data member climbing out of data/shops/
        ({"data/shops/../../../../escaped/x.parquet": b"PAR1"}, {"datasets": {"shops": {}}}),
        # a dataset name climbing out of data/
        ({}, {"datasets": {"../../../escaped": {}}}),
        # a model version climbing out of saved_models/<model>/
        ({}, {"models": {"risk": "../../../escaped"}}),
        # the data folder itself
        ({}, {"datasets": {".": {}}}),
    ],
)
def test_revert_refuses_a_path_out_of_the_project_and_writes_nothing(tmp_path, extra, contents):
    small = make_small(tmp_path)
    project = small.project()
    before = _definitions(project)
    data_before = sorted(p.relative_to(tmp_path) for p in project.data_root.rglob("*"))
    members = dict(before)
    members["project.yaml"] = before["project.yaml"] + b"# reverted\n"
    members.update(extra)
    bundles.publish(
        small.settings.home, small.store, "shop", "evil", members, contents, "", "mallory"
    )
    with pytest.raises(bundles.BundleError, match="bundle evil"):
        bc.revert(small.store, small.project(), "evil")
    assert not list(tmp_path.rglob("escaped*"))
    assert _definitions(small.project()) == before  # not even the definitions changed
    assert sorted(p.relative_to(tmp_path) for p in project.data_root.rglob("*")) == data_before
