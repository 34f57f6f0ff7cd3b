"""A status change is claimed in the control store before it is alerted, so two watchers (two
runners) that both saw the old status send it once."""

from __future__ import annotations

from engine.monitoring import status
from engine.storage.control import open_store


def test_two_watchers_of_the_same_change_alert_once(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'control.db'}")
    spec = [{"type": "log"}]
    healthy = status.Status("deployment", "p-on-a", "p on a", "HEALTHY", ["ok"])
    broken = status.Status("deployment", "p-on-a", "p on a", "UNHEALTHY", ["run failed"])
    assert status.check_and_alert(store, [healthy], spec) == []  # first seen, healthy: recorded
    # Both watchers read HEALTHY; the first to claim the change alerts it, the other does not.
    assert status._claim(store, broken, "HEALTHY") is True
    assert status._claim(store, broken, "HEALTHY") is False
    # A new object first seen bad: only one insert wins.
    other = status.Status("endpoint", "a/s/e", "s/e on a", "ERROR", ["down"])
    assert status._claim(store, other, None) is True
    assert status._claim(store, other, None) is False
    # Nothing changed since: no alert.
    assert status.check_and_alert(store, [broken, other], spec) == []
    recovered = status.Status("deployment", "p-on-a", "p on a", "HEALTHY", ["ok again"])
    assert status.check_and_alert(store, [recovered], spec) == [recovered]
