"""Every code block of README.md and docs/*.md is run or checked, so none goes stale:
Python blocks are executed (in a scratch directory that sees saved_models/), shell blocks'
`pde-zoo` commands are parsed by the real command line, and the scripts they name exist and
pass `bash -n`. Untagged blocks are text (usage synopses, equations, tables)."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pde_zoo import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# Blocks that train a model (a few epochs on a subset, then the full test set) are marked slow: CI runs them
# (`-m "slow or not slow"`); the default run stays under 5 minutes.
TRAINS = re.compile(r"\btrain(_from_card)?\(")


def blocks(language):
    found = []
    for page in PAGES:
        for number, match in enumerate(re.finditer(r"```(\w*)\n(.*?)```", page.read_text(), re.S)):
            if match.group(1) == language:
                code = match.group(2)
                marks = [pytest.mark.slow] if language == "python" and TRAINS.search(code) else []
                found.append(pytest.param(code, id=f"{page.relative_to(ROOT)}#{number}", marks=marks))
    return found


def commands(script):
    """The command lines of a shell block: comments dropped, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


@pytest.mark.parametrize("code", blocks("python"))
def test_python_blocks_run(code, tmp_path, monkeypatch):
    (tmp_path / "saved_models").symlink_to(ROOT / "saved_models")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("script", blocks("bash"))
def test_shell_blocks_are_valid_commands(script):
    """`pde-zoo` lines (after any VAR=value prefix) parse; scripts and deploy files they run exist."""
    parser = cli.make_parser()
    for words in commands(script):
        while words and re.match(r"^[A-Z_]+=", words[0]):  # environment prefix
            words = words[1:]
        if not words or words[0] in ("export", "python") or "$(" in " ".join(words) or words[0] in ("kubectl",):
            continue
        if words[0] == "sbatch":  # the batch file must exist; --wrap runs a pde-zoo command
            wrapped = [w for w in words if w.startswith("pde-zoo ")]
            files = [w for w in words[1:] if not w.startswith("-") and (ROOT / w).suffix]
            words = shlex.split(wrapped[0]) if wrapped else None
            assert not files or (ROOT / files[0]).is_file(), f"{files[0]}: no such file"
            if words is None:
                continue
        if words[0] == "pde-zoo":
            if words[1] != "bench":  # bench's arguments belong to scripts/bench.py
                parser.parse_args(words[1:])  # SystemExit on an unknown subcommand or option
            continue
        script_path = ROOT / (words[1] if words[0] == "bash" else words[0])
        assert script_path.is_file(), f"{words[0]}: no such script"
        assert subprocess.run(["bash", "-n", str(script_path)]).returncode == 0


def test_kubernetes_and_slurm_files_named_in_the_docs_exist():
    text = "\n".join(page.read_text() for page in PAGES)
    for name in set(re.findall(r"deploy/[\w./-]+\.(?:yaml|sbatch)", text)):
        assert (ROOT / name).is_file(), name
