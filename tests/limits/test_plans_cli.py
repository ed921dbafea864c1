"""Plans from the command line: `account create --plan` and `account set-plan`, checked against
the deployment's plans (DUPIFY_PLANS__*)."""

from __future__ import annotations

import json

from support.cli import cli_env, cli_runner


def test_create_with_a_plan_and_change_it(database_url: str) -> None:
    run = cli_runner(
        cli_env(
            database_url,
            DUPIFY_PLANS__TEAM__REQUESTS_PER_MINUTE="120",
            DUPIFY_PLANS__TEAM__IMAGES_PER_MONTH="5000",
        )
    )

    def plan_of(email: str) -> str:
        code, output = run("account", "list", "--json")
        assert code == 0, output
        plans: dict[str, str] = {row["email"]: row["plan"] for row in json.loads(output)}
        return plans[email]

    code, output = run(
        "account", "create", "--email", "p@example.com", "--name", "P", "--plan", "pro"
    )
    assert code == 0, output
    assert plan_of("p@example.com") == "pro"
    code, output = run(
        "account", "create", "--email", "q@example.com", "--name", "Q", "--plan", "gold"
    )
    assert code == 1 and "unknown plan 'gold'" in output and "free, pro, team" in output

    code, output = run("account", "set-plan", "p@example.com", "team")
    assert code == 0, output
    assert "pro -> team (120 requests/minute per key, 5000 images/month)" in output
    assert plan_of("p@example.com") == "team"
    code, output = run("account", "set-plan", "p@example.com", "gold")
    assert code == 1 and plan_of("p@example.com") == "team"
    code, output = run("account", "set-plan", "nobody@example.com", "free")
    assert code == 1 and "no account" in output
