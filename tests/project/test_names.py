"""One name per thing on the command line: the renamed options work under their new names, their old
spellings still work for one release and say the new name, and --help shows only the new one."""

from __future__ import annotations

import argparse

import pytest

from edge.cli import build_parser, registered_extensions
from edge.system.renamed import add_renamed


def test_an_old_spelling_sets_the_same_value_and_names_the_new_one(capsys):
    parser = argparse.ArgumentParser(prog="smartbin fleet-sim")
    add_renamed(parser, "--devices", "--bins", type=int, default=50)
    assert parser.parse_args(["--devices", "7"]).devices == 7 and capsys.readouterr().err == ""
    assert parser.parse_args(["--bins", "8"]).devices == 8
    assert "--bins is now --devices" in capsys.readouterr().err
    assert "--bins" not in parser.format_help() and "--devices" in parser.format_help()


@pytest.mark.parametrize(
    "command, new, old",
    [
        (["fleet", "rollout"], "--devices", "--bins"),
        (["fleet", "rollout"], "--baseline", "--serving"),
        (["fleet-sim"], "--devices", "--bins"),
        (["review"], "--baseline", "--serving"),
        (["features"], "--feature-cache", "--cache"),
    ],
)
def test_each_renamed_option_of_the_commands(command, new, old, capsys):
    parser = build_parser(registered_extensions())
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--help"])
    shown = capsys.readouterr().out
    assert new in shown and f"{old} " not in shown and f"{old}\n" not in shown
