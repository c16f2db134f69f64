"""The package's shape, as promised to contributors: no import cycles, short functions,
and an `import ferlab` that loads nothing heavy and changes nothing global."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ferlab"
MAX_FUNCTION_LINES = 80
HEAVY = ("matplotlib", "optuna", "fastapi", "uvicorn", "cv2", "onnxruntime", "sklearn", "torch")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """ferlab modules this file imports anywhere (module level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {target} | {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ferlab"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ferlab")}
    # A module importing its own parent package (`from . import __version__`) is not an edge.
    return {m for m in found & modules if m != name and not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "ferlab.study.report" in graph and "ferlab.study.engine" in graph["ferlab.study.report"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_function_longer_than_a_screen():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_every_module_names_its_dependencies():
    """A module's header says what it builds on, so a newcomer can place it without reading it."""
    missing = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "models"
               if "Depends on" not in (ast.get_docstring(ast.parse(p.read_text())) or "")]
    assert not missing, missing


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_ferlab_is_light_and_has_no_side_effects():
    out = run_python(
        "import sys; import ferlab; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); "
        "print(sorted(m for m in sys.modules if m.startswith('ferlab.')))"
    )
    heavy, submodules = out.strip().splitlines()
    assert heavy == "[]", f"import ferlab loaded {heavy}"
    assert submodules == "[]", f"import ferlab loaded {submodules}"


def test_public_names_load_on_first_use_and_stay_functions():
    out = run_python(
        "import matplotlib; before = matplotlib.get_backend(); "
        "import ferlab.evaluation.scores, ferlab.training, ferlab.cli; "  # the submodules exist too
        "from ferlab import evaluate, train, EmotionRecognizer, load_classifier, plot_loss_acc; "
        "import ferlab; "
        "print(callable(evaluate), callable(train), ferlab.train is train, ferlab.evaluate is evaluate); "
        "print(matplotlib.get_backend() == before)"
    )
    assert out.split() == ["True"] * 5
    with pytest.raises(AttributeError):
        import ferlab

        ferlab.no_such_name  # noqa: B018


def test_predicting_does_not_load_training_studies_or_serving():
    out = run_python(
        "import sys; from ferlab.photos.recognizer import EmotionRecognizer; "
        "print(sorted(m for m in ('matplotlib', 'optuna', 'fastapi', 'onnxruntime', 'ferlab.training', "
        "'ferlab.study', 'ferlab.serve') if m in sys.modules))"
    )
    assert out.strip() == "[]", out


def _calls(node: ast.AST, inside_catch: bool = False):
    """(function name, inside a `with warnings.catch_warnings()`) for every call under node."""
    if isinstance(node, ast.With):
        inside_catch = inside_catch or any(
            isinstance(i.context_expr, ast.Call)
            and getattr(i.context_expr.func, "attr", "") == "catch_warnings" for i in node.items)
    if isinstance(node, ast.Call):
        func = node.func
        yield (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")), inside_catch
    for child in ast.iter_child_nodes(node):
        yield from _calls(child, inside_catch)


def test_global_state_is_changed_in_one_documented_place():
    """Thread pools are set only by threads.py (when a caller asks), and warning filters
    only inside `warnings.catch_warnings()`, which restores them."""
    setters, filters = [], []
    for path in SRC.rglob("*.py"):
        for name, caught in _calls(ast.parse(path.read_text())):
            if name in ("set_num_threads", "setNumThreads") and path.name != "threads.py":
                setters.append(f"{path.relative_to(SRC)}: {name}")
            if name in ("filterwarnings", "simplefilter") and not caught:
                filters.append(f"{path.relative_to(SRC)}: {name}")
    # YuNet's OpenMP pool: per calling thread, limited inside its detector (detection/yunet.py).
    assert setters == ["photos/detection/yunet.py: set_num_threads"], setters
    assert not filters, filters
