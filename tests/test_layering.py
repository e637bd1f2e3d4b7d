"""The Python package is layered: no import cycles among ccfg's modules at module level, and only
the CLI (__main__) imports the package itself or sits above everything else."""
import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "ccfg"
NAMES = {p.stem for p in PKG.glob("*.py")}


def module_imports(path):
    """ccfg modules imported at module level (function-local imports are lazy and allowed)."""
    deps = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ccfg"):
            parts = node.module.split(".")
            deps.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "ccfg":
                    deps.add("__init__")
                elif a.name.startswith("ccfg."):
                    deps.add(a.name.split(".")[1])
    return deps & NAMES


GRAPH = {p.stem: module_imports(p) for p in PKG.glob("*.py")}


def test_no_module_imports_the_package_or_the_cli():
    for name, deps in GRAPH.items():
        if name not in ("__init__", "__main__"):
            assert "__init__" not in deps and "__main__" not in deps, (name, deps)


def test_no_import_cycles():
    def visit(name, path):
        for dep in GRAPH.get(name, ()):
            assert dep not in path, f"import cycle: {' -> '.join(path + [dep])}"
            visit(dep, path + [dep])

    for name in GRAPH:
        if name != "__init__":
            visit(name, [name])


def test_bottom_layers_import_nothing_above_them():
    assert GRAPH["_validate"] == set() and GRAPH["_device"] <= {"_core"}
    assert GRAPH["guidance"] <= {"_validate"}
