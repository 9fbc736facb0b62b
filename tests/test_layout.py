"""The house rules, read from the source with ast: imports point one way (scripts -> sweeplib
modules -> common), no import cycle (function-level imports included), no file over 500 lines
and no function over 60 (tests excepted)."""
import ast
from pathlib import Path

from conftest import ROOT

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
# Files or functions allowed past the limits, with the reason. Empty: none has to be.
EXCEPTIONS = {}

SCRIPTS = sorted(p for p in ROOT.glob("*.py") if p.name != "common.py")
PACKAGE = sorted((ROOT / "sweeplib").glob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").rglob("*.py"))
TEMPLATES = sorted((ROOT / "sweeplib" / "templates").iterdir())


def module_name(path):
    """'common', 'run_all', 'sweeplib.pipeline', 'benchmarks.compare' ..."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def imports(path):
    """Every module a file imports, at any depth (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "sweeplib":
                out |= {f"sweeplib.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


SCRIPT_NAMES = {module_name(p) for p in SCRIPTS}
PACKAGE_NAMES = {module_name(p) for p in PACKAGE}
PROJECT = SCRIPT_NAMES | PACKAGE_NAMES | {"common"}
GRAPH = {module_name(p): {m for m in imports(p) if m in PROJECT or m.startswith("sweeplib")}
         for p in SCRIPTS + PACKAGE + [ROOT / "common.py"]}


def test_common_imports_nothing_from_the_project():
    assert GRAPH["common"] == set()


def test_scripts_import_only_the_package_and_common():
    for script in SCRIPT_NAMES:
        wrong = {m for m in GRAPH[script] if m in SCRIPT_NAMES}
        assert not wrong, f"{script}.py imports the script(s) {sorted(wrong)}"


def test_the_package_never_imports_a_script():
    for name in PACKAGE_NAMES:
        wrong = {m for m in GRAPH[name] if m in SCRIPT_NAMES}
        assert not wrong, f"{name} imports the script(s) {sorted(wrong)}"
        unknown = {m for m in GRAPH[name] if m.startswith("sweeplib") and m not in PACKAGE_NAMES
                   and m != "sweeplib"}
        assert not unknown, f"{name} imports {sorted(unknown)}, not modules of the package"


def test_no_import_cycle():
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_no_file_over_500_lines():
    for path in SCRIPTS + PACKAGE + BENCHMARKS + TEMPLATES + [ROOT / "common.py"]:
        n = len(path.read_text().splitlines())
        rel = str(path.relative_to(ROOT))
        assert n <= MAX_FILE_LINES or rel in EXCEPTIONS, f"{rel}: {n} lines"


def test_no_function_over_60_lines():
    for path in SCRIPTS + PACKAGE + BENCHMARKS + [ROOT / "common.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                where = f"{path.relative_to(ROOT)}:{node.name}"
                assert n <= MAX_FUNCTION_LINES or where in EXCEPTIONS, f"{where}: {n} lines"


def test_every_function_says_what_it_does():
    for path in SCRIPTS + PACKAGE + [ROOT / "common.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("__"):
                assert ast.get_docstring(node), f"{path.relative_to(ROOT)}:{node.name}"


def private_imports(path, packages=("scipy", "numpy")):
    """Names a file imports from a private module or as a private name of these packages
    (`from scipy.sparse import _sparsetools`, `import scipy.optimize._lbfgsb`)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out += [n for n in names if n.split(".")[0] in packages
                and any(part.startswith("_") for part in n.split(".")[1:])]
    return out


def test_the_package_imports_no_private_name_of_scipy_or_numpy(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from scipy.sparse import _sparsetools\nimport scipy.optimize._lbfgsb\n"
                   "from scipy.optimize import minimize\n")
    assert private_imports(bad) == ["scipy.sparse._sparsetools", "scipy.optimize._lbfgsb"]
    assert {str(p.name): private_imports(p) for p in PACKAGE if private_imports(p)} == {}
