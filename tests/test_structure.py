"""Module boundaries (issue 13 §5): dependencies point down, no import cycle, nothing happens
at import, one place for the run name."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pde_zoo import io_utils
from pde_zoo.registry import parse_run_name, run_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pde_zoo"
# What the bottom of the package may import from pde_zoo: itself, the solvers, and the
# standard-library-only cache location.
LAYER_IMPORTS = ("pde_zoo.layers", "pde_zoo.ode", "pde_zoo.cache")


def module_path(name):
    """The file of module `name` (pde_zoo.a.b), or None when it is not a module of the package."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def pde_zoo_imports(path):
    """The pde_zoo modules a file imports, anywhere in it (`from pde_zoo.a import b` gives
    pde_zoo.a.b when b is a module, else pde_zoo.a; `from pde_zoo import f`, f not a module,
    gives "pde_zoo", the package root)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.split(".")[0] == "pde_zoo"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pde_zoo":
            names += [f"{node.module}.{a.name}" if module_path(f"{node.module}.{a.name}") else node.module for a in node.names]
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "layers").glob("*.py")), ids=lambda p: p.name)
def test_layers_import_nothing_above_them(path):
    above = [n for n in pde_zoo_imports(path) if not n.startswith(LAYER_IMPORTS)]
    assert not above, f"{path.name} imports {above}"


def test_no_import_cycle_through_the_package_root():
    """No module that `import pde_zoo` loads imports from the package root again (`import
    pde_zoo`, `from pde_zoo import build`): the cycle pde_zoo/__init__ -> module -> pde_zoo."""
    seen, todo = set(), ["pde_zoo"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts))]  # a module's packages load first
        todo += pde_zoo_imports(module_path(name))
    offenders = sorted(n for n in seen - {"pde_zoo"} if "pde_zoo" in pde_zoo_imports(module_path(n)))
    assert not offenders


def test_dependencies_point_one_way():
    assert not [n for n in pde_zoo_imports(PACKAGE / "figures.py") if n.startswith("pde_zoo.training")]
    for script in (ROOT / "scripts").glob("*.py"):
        assert "pde_zoo.cli" not in pde_zoo_imports(script), f"{script.name} imports the CLI (which runs scripts/bench.py)"


def test_no_side_effects_at_import(tmp_path):
    """Importing the package sets neither the umask nor matplotlib's backend."""
    code = (
        "import os, matplotlib; os.umask(0o027)\n"
        "import pde_zoo, pde_zoo.figures, pde_zoo.io_utils\n"
        "print(oct(os.umask(0o027)), matplotlib.get_backend())\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg", "PDE_ZOO_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["0o27", "svg"]


def test_atomic_write_text_gives_the_usual_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        io_utils.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_run_name_round_trip():
    assert run_name("pde2", 50) == "pde2-50" and parse_run_name("pde2-50") == ("pde2", 50)
    for bad in ("pde2", "pde2-", "-5", "pde2-x"):
        with pytest.raises(ValueError, match="NAME-DEPTH"):
            parse_run_name(bad)
