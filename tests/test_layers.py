"""The package's layers, read from its imports (ast): who may import whom, no circles, imports at the top.

The map and the reasons are in docs/architecture.md. Each rule is checked on the real source
tree; a synthetic tree shows that the checker finds each kind of violation.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sefar_fast"

# Optional or slow-to-import dependencies: the only third-party modules imported inside functions.
HEAVY = ("nvidia", "triton", "av", "matplotlib", "huggingface_hub", "tensorboard", "wandb", "onnx",
         "onnxruntime", "torch._inductor", "torch.utils.tensorboard")
# The CLI imports each command's library when the command runs (`sefar --help` must not wait for torch).
LAZY_LAYERS = ("cli",)


def is_heavy(name: str) -> bool:
    return any(name == h or name.startswith(h + ".") for h in HEAVY)

# The layer of a module: its first name under sefar_fast, with the ground modules grouped.
GROUND = {"errors", "console", "distributed", "io", "lock", "__init__"}

# Which layers each layer may import (itself always).
ALLOWED = {
    "ground": {"ground"},
    "ops": {"ground"},
    "models": {"ground", "ops"},
    "config": {"ground", "ops", "models"},
    "checkpoint": {"ground"},
    "kernels": {"ops", "errors"},
    "data": {"ground", "ops", "config"},
    "train": {"ground", "ops", "config", "models", "kernels", "data", "checkpoint", "eval"},
    "eval": {"ground", "ops", "config", "models", "kernels", "data", "checkpoint"},
    "bench": {"ground", "ops", "config", "models", "kernels", "data", "checkpoint", "train", "eval"},
    "cli": {"ground", "ops", "config", "models", "kernels", "data", "checkpoint", "train", "eval", "bench"},
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "ground"
    first = parts[1]
    if first in GROUND:
        return "ground"
    return {"configs": "config", "__main__": "cli"}.get(first, first)


def imports_of(path: Path, root: Path):
    """(imported module, is at module top, line) for every import in the file; relative imports resolved."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    # Imports guarded at the top (try/except ImportError, if TYPE_CHECKING) count as top-level.
    for node in tree.body:
        if isinstance(node, (ast.Try, ast.If)):
            top |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == root.name or (node.level and not node.module):
                # `from sefar_fast import kernels`: the imported names are modules
                for alias in node.names:
                    yield f"{name}.{alias.name}", id(node) in top, node.lineno
            else:
                yield name, id(node) in top, node.lineno


def package_modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an import names (`a.b.c` may be a function c of module a.b)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def heavy_modules(root: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that import a heavy dependency at their top."""
    out = set()
    for name, path in modules.items():
        if any(is_heavy(imp) for imp, at_top, _ in imports_of(path, root) if at_top):
            out.add(name)
    return out


def violations(root: Path) -> list[str]:
    modules = package_modules(root)
    heavy = heavy_modules(root, modules)
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        where = layer_of(name)
        for imp, at_top, line in imports_of(path, root):
            ours = imp.split(".")[0] == root.name
            target = resolve(imp, modules) if ours else None
            if ours and target is None:
                problems.append(f"{name}:{line} imports {imp}, which does not exist")
                continue
            if not at_top and where not in LAZY_LAYERS:
                if ours and target not in heavy:
                    problems.append(f"{name}:{line} imports {target} inside a function")
                elif not ours and not is_heavy(imp):
                    problems.append(f"{name}:{line} imports {imp} inside a function")
            if not ours or target == root.name:
                continue
            graph[name].add(target)
            to = layer_of(target)
            if to != where and to not in ALLOWED[where] and not (to == "ground" and "errors" in ALLOWED[where]
                                                                 and target == f"{root.name}.errors"):
                problems.append(f"{name}:{line} ({where}) imports {target} ({to})")
    problems += [f"import circle: {' -> '.join(c)}" for c in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (or a self-import)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_keeps_its_layers():
    assert violations(PACKAGE) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "sefar_fast"
    for rel, text in {"__init__.py": "", "errors.py": "", "ops/__init__.py": "", "kernels/__init__.py": "",
                      "train/__init__.py": "", "eval/__init__.py": "", "data/__init__.py": "",
                      "models/__init__.py": "", "cli/__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_each_kind_of_violation(tmp_path):
    root = _tree(tmp_path, {
        "ops/views.py": "from sefar_fast.errors import X\n",
        "kernels/k.py": "from sefar_fast.ops.views import V\nfrom sefar_fast.train.step import S\n",
        "train/step.py": "from sefar_fast.eval.run import E\n",
        "eval/run.py": "from sefar_fast.train.step import S\n",
        "data/loader.py": "def f():\n    from sefar_fast.data.video import x\n    import json\n",
        "data/video.py": "def g():\n    import av\n",
        "models/net.py": "from sefar_fast.cli.app import main\n",
        "cli/app.py": "def train():\n    from sefar_fast.train.step import S\n",
    })
    found = violations(root)
    assert "sefar_fast.kernels.k:2 (kernels) imports sefar_fast.train.step (train)" in found
    assert "sefar_fast.eval.run:1 (eval) imports sefar_fast.train.step (train)" in found
    assert "sefar_fast.models.net:1 (models) imports sefar_fast.cli.app (cli)" in found
    assert "sefar_fast.data.loader:2 imports sefar_fast.data.video inside a function" in found
    assert "sefar_fast.data.loader:3 imports json inside a function" in found
    assert "import circle: sefar_fast.eval.run -> sefar_fast.train.step -> sefar_fast.eval.run" in found
    # allowed: the kernel's ops import, train -> eval, the local `import av`, the CLI's lazy import
    assert len(found) == 6, found
