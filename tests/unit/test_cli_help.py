"""``crmhooks --help`` names every command there is (its first line once named two of them)."""

from __future__ import annotations

from crmhooks import cli


def test_the_help_names_every_command() -> None:
    commands = [
        c.name or (c.callback.__name__ if c.callback else "") for c in cli.app.registered_commands
    ]
    groups = [g.name or "" for g in cli.app.registered_groups]
    assert commands
    assert groups
    help_text = cli.app.info.help or ""
    missing = [name for name in [*commands, *groups] if name not in help_text]
    assert not missing, f"crmhooks --help does not name {missing}"
