"""The package's import contract, read from the source (ast), so that a change that breaks it fails:
no import cycle; layers import only downwards; the potential a user loads never reaches MPI,
the solvers or the fitting code; private names stay in their module; a short top level.

A lazy import inside a function counts like one at the top of the module: it runs too."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import random_model

PACKAGE = Path(__file__).resolve().parents[1] / "pargap"

LAYERS = (  # bottom to top: a module may import its own layer's modules and the layers below
    {"errors", "version", "progress", "compiled", "memory_limit"},
    {"settings"},
    {"data"},
    {"descriptors"},
    {"gp"},
    {"baselines"},
    {"parallel"},
    {"linalg"},
    {"potential"},
    {"analysis"},
    {"fitting"},
    {"cli"},
)
NEVER = {  # part of the package -> what it must not import, even below it
    "potential": {"pargap.fitting", "pargap.linalg", "pargap.parallel", "mpi4py"},
    "analysis": {"pargap.fitting", "pargap.linalg"},
}
MPI_USERS = {"parallel", "linalg", "cli"}  # the only parts that may import mpi4py
MAX_TOP_MODULES = 8


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def part_of(module):
    """'pargap.fitting.fit' -> 'fitting'; 'pargap' -> ''."""
    return module.split(".")[1] if "." in module else ""


def absolute(module, node):
    """The module an ``from X import ...`` node names, relative ones (``from .x``) made absolute."""
    if node.level == 0:
        return node.module
    package = module.split(".")
    if MODULES[module].name != "__init__.py":
        package = package[:-1]
    package = package[:len(package) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


def imports(module):
    """[(imported module, names taken from it, line)] of a module, at any depth (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            names = [a.name for a in node.names]
            submodules = [f"{source}.{n}" for n in names if f"{source}.{n}" in MODULES]
            found += [(s, (), node.lineno) for s in submodules]
            others = tuple(n for n in names if f"{source}.{n}" not in MODULES)
            if others or not submodules:
                found.append((source, others, node.lineno))
    return found


def graph():
    return {m: {i for i, _, _ in imports(m) if i in MODULES} for m in MODULES}


def layer(module):
    part = part_of(module)
    for k, parts in enumerate(LAYERS):
        if part in parts:
            return k
    raise AssertionError(f"{module}: its part '{part}' is in no layer of tests/test_architecture.py")


def test_every_part_has_a_layer():
    for m in MODULES:
        if m != "pargap":
            layer(m)


def test_no_import_cycle():
    edges = graph()
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_layers_import_only_downwards():
    wrong = []
    for m in MODULES:
        for target, _, line in imports(m):
            if target == "pargap" or m == "pargap":
                if m != "pargap":  # the package's face hands names on lazily; nothing imports it
                    wrong.append(f"{m}:{line} imports the package root (use pargap.version)")
                continue
            if target.startswith("pargap.") and layer(target) > layer(m):
                wrong.append(f"{m}:{line} imports {target}, a layer above it")
    assert not wrong, "\n".join(wrong)


def test_what_parts_never_import():
    wrong = []
    for m in MODULES:
        part = part_of(m)
        for target, _, line in imports(m):
            banned = NEVER.get(part, set()) | (set() if part in MPI_USERS else {"mpi4py"})
            if any(target == b or target.startswith(b + ".") for b in banned):
                wrong.append(f"{m}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_private_names_stay_private():
    """No module takes a _name from another, nor imports another part's _module."""
    wrong = []
    for m in MODULES:
        for target, names, line in imports(m):
            if not target.startswith("pargap"):
                continue
            wrong += [f"{m}:{line} takes {n} from {target}" for n in names
                      if n.startswith("_") and not n.endswith("__")]
            private = [p for p in target.split(".") if p.startswith("_")]
            if private and part_of(target) != part_of(m):
                wrong.append(f"{m}:{line} imports {target}, private to pargap.{part_of(target)}")
        for node in ast.walk(ast.parse(MODULES[m].read_text())):  # module._name
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in _module_aliases(m)):
                wrong.append(f"{m}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def _module_aliases(module):
    """Names under which ``module`` binds other pargap modules (``from pargap.x import y as z``)."""
    aliases = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            aliases |= {a.asname or a.name for a in node.names if f"{source}.{a.name}" in MODULES}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.asname and a.name in MODULES}
    return aliases


def test_short_top_level():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly under pargap/: {sorted(top)}"


def test_the_contract_test_can_fail(monkeypatch):
    """The checks above see a planted violation: potential importing the fitting code, and a cycle."""
    real = imports

    def planted(module):
        extra = []
        if module == "pargap.potential.potential":
            extra = [("pargap.fitting.fit", ("fit",), 1)]
        if module == "pargap.gp.model":
            extra = [("pargap.gp.observations", (), 1)]
        if module == "pargap.gp.observations":
            extra += [("pargap.gp.model", (), 1)]
        return real(module) + extra

    monkeypatch.setitem(globals(), "imports", planted)
    for check in (test_layers_import_only_downwards, test_what_parts_never_import, test_no_import_cycle):
        with pytest.raises(AssertionError):
            check()



def test_relative_imports_and_module_aliases_are_seen(monkeypatch, tmp_path):
    """A planted module that goes up a layer with a relative import and takes a _name through
    ``import pargap.x as y`` fails the checks, as the absolute spellings do."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..fitting import fit\nimport pargap.gp.kernels as k\nk._private\n")
    monkeypatch.setitem(MODULES, "pargap.potential.bad", bad)
    assert ("pargap.fitting.fit", (), 1) in imports("pargap.potential.bad")
    for check in (test_layers_import_only_downwards, test_what_parts_never_import, test_private_names_stay_private):
        with pytest.raises(AssertionError):
            check()

@pytest.mark.parametrize("name", ["p.h5", "p.xml"])
def test_calculator_loads_no_mpi_solver_or_fitting_code(tmp_path, rng, name):
    """`from pargap import GAPCalculator`, energy and forces from a potential file (HDF5 or GAP XML):
    in a fresh interpreter, neither mpi4py nor any fitting, selection, checkpoint or solver module
    is loaded."""
    from pargap.potential.potential import Potential

    path = tmp_path / name
    Potential([random_model(rng, 14, 14), random_model(rng, 14, 6)], {14: -1.5, 6: -2.25}).save(path)
    script = textwrap.dedent(f"""
        import sys
        from ase.build import bulk
        from pargap import GAPCalculator

        atoms = bulk("SiC", "zincblende", a=4.36)
        atoms.rattle(0.05, seed=1)
        atoms.calc = GAPCalculator({str(path)!r})
        print(atoms.get_potential_energy(), abs(atoms.get_forces()).max())
        print("\\n".join(sorted(sys.modules)))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    energy, force, *loaded = done.stdout.split("\n")[0].split() + done.stdout.split("\n")[1:]
    assert float(force) > 0  # a real energy-and-forces call
    banned = ("mpi4py", "pargap.fitting", "pargap.linalg", "pargap.parallel", "pargap.cli", "petsc4py")
    bad = [m for m in loaded if m.startswith(banned)
           or m.startswith("pargap") and any(w in m for w in ("fit", "sparsify", "checkpoint", "solve", "scalapack"))]
    assert "pargap.potential.calculator" in loaded
    assert not bad, f"loaded by an energy-and-forces call: {bad}"
