"""The package's shape: imports go one way, down the layers below, with no
cycle, counting the imports inside functions."""

import ast
import os

import pytest

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fastcnn")

# Bottom to top; a module may import from its own layer and those below.
# README.md's "Layout" section draws the same picture.
LAYERS = [
    # leaves: no fastcnn import but each other
    {"_version", "_optional", "_openmp", "_build_info", "_validate", "_files", "_threads",
     "_crossover", "_cifar"},
    # the compiled kernels, and the helpers the Python around them needs
    {"_kernels", "_conv", "_pool", "_activation", "_dense", "_loss", "_optim", "_im2col",
     "_norm", "_simd", "_blas", "_tasks", "_workspace"},
    # the mathematics: layers, convolution algorithms, losses, optimisers
    {"conv_algorithms", "layers", "losses", "optim", "augment"},
    # the model file's format, and training around any model
    {"_modelfile", "callbacks", "training"},
    # the model
    {"model"},
    # what is built on a model: persistence, ready-made networks, data, interop (with
    # _onnx, the ONNX export), plots
    {"io", "models", "datasets", "interop", "_onnx", "plots", "gradient_check", "recipes"},
    # the package's face, and the tools on top
    {"__init__", "bench", "distributed", "sklearn", "cli", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def modules():
    return sorted(f[:-3] for f in os.listdir(SOURCE) if f.endswith(".py"))


def imports_of(name):
    """The fastcnn modules that module `name` imports, anywhere in it."""
    with open(os.path.join(SOURCE, name + ".py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "fastcnn":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "fastcnn":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from fastcnn import a, b: submodules, or names of the package itself
                for alias in node.names:
                    found.add(alias.name if alias.name in RANK else "__init__")
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph():
    if not os.path.isdir(SOURCE):
        pytest.skip("needs the source tree")
    return {name: imports_of(name) for name in modules()}


def test_every_module_has_a_layer(graph):
    missing = sorted(set(graph) - set(RANK))
    assert not missing, f"put these modules in a layer of tests/test_structure.py: {missing}"


def test_imports_go_down(graph):
    up = [f"{a} ({RANK[a]}) imports {b} ({RANK.get(b)})" for a, deps in graph.items()
          for b in deps if a in RANK and RANK.get(b, -1) > RANK[a]]
    assert not up, "imports that go up a layer:\n" + "\n".join(sorted(up))


def find_cycle(graph):
    """A list of modules that import each other in a ring, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle(graph):
    # the package's __init__ imports everything; modules never import it back
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_found_inside_functions(graph):
    # the command line imports plots and distributed only inside the commands
    # that need them, and they count
    assert {"plots", "distributed", "datasets"} <= graph["cli"]
    # model imports training (its fit goes down into the loop); training
    # knows no model class
    assert "training" in graph["model"] and "model" not in graph["training"]
