"""The nodal CLI: help texts, and user errors without tracebacks."""

from __future__ import annotations

import pytest

from tests.e2e.procs import nodal


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["deploy"],
        ["scenario", "run"],
        ["scenario", "define"],
        ["dashboard", "save"],
        ["api", "service", "save"],
        ["project", "use"],
        ["serve"],
        ["runner"],
        ["demo"],
    ],
)
def test_help_texts(args):
    result = nodal([*args, "--help"], {})
    assert result.returncode == 0, result.stderr
    assert "usage: " in result.stdout


def test_user_errors_are_one_line_and_exit_2(demo_env):
    env = demo_env.environ()
    fraud = ["--project", "fraud"]  # the demo home has no current project
    cases = [
        (
            ["deploy", "bundle", "v1", *fraud, "--infra", "nowhere"],
            "unknown infrastructure 'nowhere'",
        ),
        (
            ["deploy", "bundle", "v404", *fraud, "--infra", "automation-prod"],
            "has no bundle 'v404'",
        ),
        (["flow", "build", "nope", *fraud], "has no dataset 'nope'"),
        (["bundle", "create", "v1", *fraud], "already exists"),
        (["flow", "build", "nope"], "no project given: pass --project NAME or set one with"),
        (["deploy", "rollback", "nope"], "unknown deployment 'nope'"),
        (
            [
                "data",
                "generate",
                "--out",
                "/tmp/x-nodal-cli",
                "--ring-city",
                "Atlantis",
                "--ring-start-day",
                "1",
            ],
            "Atlantis",
        ),
    ]
    for args, message in cases:
        result = nodal(args, env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_a_setting_it_cannot_take_is_one_line_and_exit_2(demo_env):
    for variable, value, message in [
        ("NODAL_CATCH_UP", "bad", "NODAL_CATCH_UP must be 'once' or 'skip'"),
        ("NODAL_SESSION_HOURS", "0", "NODAL_SESSION_HOURS must be a positive number"),
    ]:
        result = nodal(["infra", "list"], {**demo_env.environ(), variable: value})
        assert result.returncode == 2, (variable, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr


def test_listing_commands_show_the_demo_state(demo_env):
    env = demo_env.environ()
    result = nodal(["deploy", "list"], env)
    assert result.returncode == 0
    assert (
        "fraud-on-automation-prod" in result.stdout
        and "fraud_detection-on-api-prod" in result.stdout
    )
    result = nodal(["scenario", "runs", "--infra", "automation-prod"], env)
    assert "daily_scoring" in result.stdout and "SUCCESS" in result.stdout
    listed = nodal(["infra", "list"], env).stdout.splitlines()  # no runner ran on this home
    assert any(line.startswith("automation-prod") and "no runner has run here" in line
               for line in listed), listed  # fmt: skip
