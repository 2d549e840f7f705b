"""Every ``wsolctl …`` command line in README.md and docs/ parses against the CLI: its subcommand
exists, each option it gives exists on that subcommand, and each ``recipes/…`` path it names is in
the repository. Command lines are read from fenced code blocks and from inline code spans."""
import re
import shlex
from pathlib import Path

import pytest
import typer

from wsolctl.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^\s*```")
INLINE = re.compile(r"`(wsolctl [^`]+)`")


def command_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every ``wsolctl`` invocation in a Markdown file."""
    found, in_block, pending = [], False, None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_block = not in_block
            continue
        if in_block:
            text = line.strip().removeprefix("$ ")
            if pending is not None:  # a continued command line
                pending = (pending[0], pending[1] + " " + text.rstrip("\\"))
            elif text.startswith("wsolctl ") or text == "wsolctl":
                pending = (number, text.rstrip("\\"))
            if pending is not None and not text.endswith("\\"):
                found.append(pending)
                pending = None
        else:
            found += [(number, match) for match in INLINE.findall(line)]
    return found


def _tokens(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose: split on blanks
        return command.split()


def problems(command: str) -> list[str]:
    """What does not match the CLI in one command line (empty: it parses)."""
    group = typer.main.get_command(app)  # typer's own click: groups have .commands
    tokens = _tokens(command)[1:]
    path = ["wsolctl"]
    while hasattr(group, "commands") and tokens and not tokens[0].startswith("-"):
        name = tokens[0]
        if "/" in name and all(part in group.commands for part in name.split("/")):  # "run/train …"
            return [p for part in name.split("/") for p in problems(" ".join(["wsolctl", *path[1:], part, *tokens[1:]]))]
        if name not in group.commands:
            if name.isupper() or name in ("...", "…") or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
                return []  # a placeholder ("wsolctl COMMAND", "wsolctl …"): nothing to check
            return [f"`{' '.join(path)}` has no subcommand {name!r} (it has: {', '.join(sorted(group.commands))})"]
        group = group.commands[name]
        path.append(name)
        tokens = tokens[1:]
    out = []
    options = {opt for param in group.params for opt in (*param.opts, *param.secondary_opts)}
    for token in tokens:
        token = token.strip("[]()")
        if token.startswith("-") and token not in ("-", "--") and not re.fullmatch(r"-?\d+(\.\d+)?", token):
            option = token.split("=", 1)[0]
            if option not in options:
                out.append(f"`{' '.join(path)}` has no option {option} (it has: {', '.join(sorted(options))})")
        elif re.match(r"(\./)?recipes/", token) and not any(c in token for c in "<>*{}"):
            if not (ROOT / token).exists():
                out.append(f"{token}: no such file in the repository")
    return out


CASES = [(path, number, command) for path in DOCS for number, command in command_lines(path)]


def test_the_docs_name_commands():
    assert len(CASES) > 30, "the command-line extraction found almost nothing: check command_lines()"
    assert any(command.startswith("wsolctl run recipes/") for _, _, command in CASES)


@pytest.mark.parametrize("path, number, command", CASES,
                         ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in CASES])
def test_a_documented_command_line_parses(path, number, command):
    found = problems(command)
    assert not found, f"{path.relative_to(ROOT)}:{number}: `{command}`:\n  " + "\n  ".join(found)


def test_the_checker_finds_what_is_wrong():
    assert problems("wsolctl run recipes/quickstart.yaml --out x") == []
    assert problems("wsolctl predict OUT slide.tif --out p --selection b-pseudo") == []
    assert problems("wsolctl sample camelyon16 SLIDES XML --out o --p0 0.2") == []
    assert "has no subcommand 'frobnicate'" in problems("wsolctl frobnicate x")[0]
    assert "`wsolctl select` has no option --executor" in problems("wsolctl run/select … --executor ray")[0]
    assert "has no option --nope" in problems("wsolctl show recipes/quickstart.yaml --nope")[0]
    assert "recipes/camelyon16.yaml: no such file" in problems("wsolctl run recipes/camelyon16.yaml")[0]
