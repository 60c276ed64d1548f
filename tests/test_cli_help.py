"""Every option and command of both programs says what it does in --help (issue 22)."""

import argparse

import pytest

from pom_inference.cli import build_parser as infer_parser
from pom_training.cli import build_parser as pom_parser


def _options(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), "(the command)", helps.get(name)
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action.option_strings or action.dest, action.help


@pytest.mark.parametrize("program, parser", [("pom", pom_parser), ("pom-infer", infer_parser)])
def test_every_option_has_help(program, parser):
    missing = [(" ".join((program, *path)), name) for path, name, text in _options(parser()) if not text]
    assert not missing
