"""The `%codemode` commands apart from a kernel: one module each, each with its parser made by
IPython's magic_arguments (errors are UsageErrors, never SystemExit), none importing the magic."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest
from IPython.core.error import UsageError

from codemode_jupyter.jupyter.commands import dispatch
from codemode_jupyter.jupyter.commands.dispatch import COMMANDS
from codemode_jupyter.jupyter.commands.usage import CommandParser
from codemode_jupyter.jupyter.magics import cell_parser, help_text

COMMANDS_DIR = pathlib.Path(dispatch.__file__).parent


def test_each_command_has_a_module_of_its_own_with_its_parser() -> None:
    for name, command in COMMANDS.items():
        module = sys.modules[command.run.__module__]
        assert pathlib.Path(module.__file__).parent == COMMANDS_DIR
        assert isinstance(command.parser, CommandParser), name
        assert command.parser.prog == f"%codemode {name}"
    assert isinstance(cell_parser(), CommandParser) and cell_parser().prog == "%%codemode"


@pytest.mark.parametrize(
    ("name", "words"),
    [("last", "--nope"), ("tools", "extra"), ("attach", ""), ("serve", "--port x"), ("pip", "-U")],
)
def test_bad_words_are_a_usage_error_with_the_usage_line_never_system_exit(
    name: str, words: str
) -> None:
    with pytest.raises(UsageError) as caught:
        COMMANDS[name].parser.parse_line(words)
    assert str(caught.value).startswith(f"usage: %codemode {name}")


def test_an_unclosed_quote_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="usage: %%codemode"):
        cell_parser().parse_line("--out 'run")


def test_the_help_lists_every_option_of_every_command() -> None:
    text = help_text(examples=True)
    for name in COMMANDS:
        assert f"%codemode {name}" in text
    for action in COMMANDS["serve"].parser._actions:
        assert action.option_strings[0] in text


def test_no_command_module_imports_the_magic() -> None:
    for path in COMMANDS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "codemode_jupyter.jupyter.magics", path
                assert "magics" not in {a.name for a in node.names}, path
    # Importing the commands does not bring the magic in either.
    code = (
        "import sys, codemode_jupyter.jupyter.commands.dispatch\n"
        "assert 'codemode_jupyter.jupyter.magics' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
