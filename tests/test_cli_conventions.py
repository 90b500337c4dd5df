"""The command line's conventions (issue 17): every command's --help shows examples that parse,
and the shell completion click provides is there, completing commands and region names."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from residency.cli import main

REPO = Path(__file__).resolve().parents[1]


def _commands(group: click.Group = main, path: tuple[str, ...] = ("residency",)) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*path, name))
        else:
            out.append(((*path, name), cmd))
    return out


def _examples(help_text: str) -> list[str]:
    lines = help_text.splitlines()
    start = lines.index("  Examples:") + 1
    out = []
    for line in lines[start:]:
        if not line.startswith("    residency "):
            break
        out.append(line.strip())
    return out


@pytest.mark.parametrize("path,cmd", _commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_shows_examples_of_itself_that_parse(path, cmd):
    r = CliRunner().invoke(main, [*path[1:], "--help"])
    assert r.exit_code == 0, r.output
    examples = _examples(r.output)
    assert examples, f"no examples in `{' '.join(path)} --help`"
    for ex in examples:
        words = shlex.split(ex)[1:]
        if words[:1] == ["--regions"]:  # the root's own option, before the command
            words = words[2:]
        assert tuple(words[: len(path) - 1]) == path[1:], f"`{ex}` is not an example of `{' '.join(path)}`"
        # the arguments and options parse (nothing runs: only the command's context is made)
        cmd.make_context(" ".join(path), words[len(path) - 1:])


def test_shell_completion_scripts_are_produced():
    for shell, marker in (("bash_source", "complete -o nosort -F _residency_completion residency"),
                          ("zsh_source", "#compdef residency"), ("fish_source", "complete --no-files --command residency")):
        r = CliRunner().invoke(main, [], prog_name="residency", env={"_RESIDENCY_COMPLETE": shell})
        assert r.exit_code == 0 and marker in r.output, (shell, r.output)


def _complete(words: str) -> list[str]:
    r = CliRunner().invoke(main, [], prog_name="residency",
                           env={"_RESIDENCY_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))})
    assert r.exit_code == 0, r.output
    return [line.split(",", 1)[1] for line in r.output.splitlines()]


def test_completion_offers_commands_and_the_regions_of_regions_yaml(monkeypatch):
    monkeypatch.chdir(REPO / "migrate")  # regions.yaml is found upward, as for every command
    monkeypatch.delenv("RESIDENCY_REGIONS", raising=False)
    assert _complete("residency move st") == ["start", "status"]
    assert _complete("residency move start 42 --to ") == ["us", "eu", "au"]
    assert _complete("residency regions show e") == ["eu"]
