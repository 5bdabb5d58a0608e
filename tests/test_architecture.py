"""The package's layers: every import inside avmatch points down the list below (or stays in its own
layer), and no module imports itself back through others. Walks the source with ast, so imports
inside functions count too. See ARCHITECTURE.md."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "avmatch"

# lowest first; a module may import its own layer and those before it
LAYERS = [
    {"errors", "atomic", "progress", "options", "cluster"},
    {"media"},
    {"corpus"},
    {"features"},  # extractors, the typed extractor record, the batch job into a corpus, the media cache
    {"models"},
    {"losses", "checkpoint", "shipped"},
    {"inference"},
    {"outputs"},  # writers and readers by format: know a result by its fields, never how it was made
    {"matching", "training", "metrics"},
    {"adapt"},
    {"report", "mux"},
    {"__init__"},
    {"testing"},  # fixtures on the library: generated media and features, formats, the robustness harness
    {"speech", "demo"},  # the demo and its scene generators (media written by media.write_media)
    {"cli", "__main__"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str) -> set[str]:
    """avmatch modules that ``path`` imports (``from avmatch import __version__`` is metadata)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "avmatch"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "avmatch":
                continue
            for a in node.names:  # ``from avmatch import losses`` imports the module avmatch.losses
                sub = PACKAGE.parent.joinpath(*f"{base}.{a.name}".split("."))
                if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                    out.add(f"{base}.{a.name}")
                elif not (base == "avmatch" and a.name == "__version__"):
                    out.add(base)
    return out - {name}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, name) for name, path in files.items()}


def test_every_import_points_down_the_layers():
    upward = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
              for m, deps in graph().items() for d in deps if layer_of(d) > layer_of(m)]
    assert not upward, "\n".join(upward)


REGISTRIES = ("avmatch.models", "avmatch.features")


def registration(a: str, b: str) -> bool:
    """Whether a -> b is a registry package importing its member so it registers, or the member
    importing the package's ``register_*`` (avmatch.models <-> avmatch.models.dual): that back and
    forth is by design; imports between members are checked like any other."""
    return any(x in REGISTRIES and y.startswith(x + ".") for x, y in ((a, b), (b, a)))


def cycles(g: dict[str, set[str]]) -> list[str]:
    """Every import cycle of the graph ``g`` (node -> the nodes it imports), as "a -> b -> a"."""
    state: dict[str, int] = {}
    found = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if d == m or d not in g:
                continue
            if state.get(d) == 1:
                found.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    return found


def test_no_import_cycles():
    g = {m: {d for d in deps if not registration(m, d)} for m, deps in graph().items()}
    assert not cycles(g), "\n".join(cycles(g))


def package(module: str) -> str:
    """avmatch.demo.scenes -> avmatch.demo."""
    return ".".join(module.split(".")[:2])


def test_no_cycles_between_packages():
    """Package by package (avmatch.demo, avmatch.testing, avmatch.cli, ...): none imports another
    that imports it back, however indirectly (imports inside functions count)."""
    g: dict[str, set[str]] = {}
    for m, deps in graph().items():
        g.setdefault(package(m), set()).update(package(d) for d in deps)
    assert not cycles(g), "\n".join(cycles(g))


def test_the_checker_sees_a_planted_upward_import_and_cycle(tmp_path):
    """The walker itself: an import from inside a function counts, and so does a module named in
    ``from avmatch import ...``."""
    bad = tmp_path / "m.py"
    bad.write_text("from avmatch import losses\n\ndef f():\n    from avmatch.cli import main\n")
    assert imports(bad, "avmatch.corpus") == {"avmatch.cli", "avmatch.losses"}
    assert layer_of("avmatch.cli") > layer_of("avmatch.corpus")
    assert layer_of("avmatch.cli") > layer_of("avmatch.demo.scenes") > layer_of("avmatch.testing.badinputs")
    assert cycles({"avmatch.demo": {"avmatch.testing"}, "avmatch.testing": {"avmatch.demo"}}) == [
        "avmatch.demo -> avmatch.testing -> avmatch.demo"]


# the corpus stamps each manifest row with the name and version of the record it keeps as written
RECORD_READERS = {"avmatch.features", "avmatch.corpus"}


def record_reads(path: Path) -> list[int]:
    """Lines of ``path`` that read a field of an extractor record from its table: ``x.extractor[...]``
    or ``x.extractor.get(...)``, where the record is kept as written (a corpus's ``extractor``)."""
    def table(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "extractor"

    return sorted(node.lineno for node in ast.walk(ast.parse(path.read_text()))
                  if (isinstance(node, ast.Subscript) and table(node.value))
                  or (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and node.func.attr == "get" and table(node.func.value)))


def test_only_the_features_package_reads_the_extractor_record(tmp_path):
    """Everywhere else reads an ExtractorRecord's fields (ExtractorRecord.from_dict of a corpus's table)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    reads = [f"{m}:{line}" for m, p in sorted(files.items()) if package(m) not in RECORD_READERS
             for line in record_reads(p)]
    assert not reads, "reads the extractor record's table: " + ", ".join(reads)
    planted = tmp_path / "m.py"
    planted.write_text("def f(corpus):\n    return corpus.extractor.get('name'), corpus.extractor['version']\n")
    assert record_reads(planted) == [2, 2]


# What avmatch/demo/ may import of the library: the public API (``avmatch``) and the names declared here,
# each for a reason ARCHITECTURE.md gives ("The demo's declared dependencies"); the demo's own modules,
# eSpeak NG (``speech``) and the fixtures (``testing``) freely.
PUBLIC_API = {"extract", "train", "load", "evaluate", "Model", "Result", "__version__"}
DEMO_OWN = ("avmatch.demo", "avmatch.speech", "avmatch.testing")
DEMO_USES = {
    "avmatch": PUBLIC_API,
    "avmatch.atomic": {"atomic_path", "write_text"},  # files written whole
    "avmatch.errors": {"AvmatchError"},  # the one-line error
    "avmatch.progress": {"bar"},  # the generators' progress bars
    "avmatch.corpus": {"Corpus", "load_corpus"},  # the feature corpus, a type of the public API
    "avmatch.media": {"FPS", "SAMPLE_RATE", "read_audio", "write_media", "process_pool"},  # media read and
    # written, and the process pool for making it
    "avmatch.features.job": {"default_workers"},  # the demo's processes: as many as extraction's default
    "avmatch.features.record": {"ExtractorRecord"},  # whether the shipped model reads the demo's features
    "avmatch.training": {"DEMO_FINE_TUNE"},  # the demo's fine-tune settings (avmatch.train(fine_tune=...))
    "avmatch.matching": {"assign", "normalise"},  # the untrained floor's scores matched like a model's
    "avmatch.metrics": {"reliability"},  # the confidence's calibration, on the unrounded confidences
    "avmatch.report": {"html_report"},  # the report page
}
# ``avmatch compare`` (demo/compare.py) tabulates models on raw score matrices of aligned test pairs
COMPARE_USES = {
    **DEMO_USES,
    "avmatch.checkpoint": {"load_trained"},
    "avmatch.inference": {"score_matrix"},
    "avmatch.matching": {"assign"},
    "avmatch.metrics": {"GROUP", "retrieval_metrics", "top5_within"},
    "avmatch.models.base": {"parameter_table"},
    "avmatch.options": {"parse_options"},
    "avmatch.report": {"markdown_table"},
    "avmatch.training": {"recipe", "train"},
}


def library_uses(path: Path, allowed: dict[str, set[str]]) -> list[str]:
    """What ``path`` imports of the library beyond ``allowed`` ({module: names}) and ``DEMO_OWN``, as
    "line: module.name"; with ``import avmatch``, every ``avmatch.X`` it reads must be public."""
    def own(module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in DEMO_OWN)

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "avmatch" and not node.level:
            for a in node.names:
                if not (own(node.module) or own(f"{node.module}.{a.name}") or a.name in allowed.get(node.module, ())):
                    found.append(f"{node.lineno}: {node.module}.{a.name}")
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append(f"{node.lineno}: a relative import (name the module)")
        elif isinstance(node, ast.Import):
            found += [f"{node.lineno}: {a.name}" for a in node.names
                      if a.name.split(".")[0] == "avmatch" and a.name != "avmatch" and not own(a.name)]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "avmatch"
              and node.attr not in PUBLIC_API):
            found.append(f"{node.lineno}: avmatch.{node.attr}")
    return found


def test_the_demo_uses_the_public_api_and_its_declared_dependencies(tmp_path):
    """The demo is an application on the library: it imports the public API and the names declared in
    ``DEMO_USES`` (``COMPARE_USES`` for demo/compare.py), nothing else, so it cannot drift back."""
    beyond = [f"{module_name(p)}:{use}" for p in sorted((PACKAGE / "demo").rglob("*.py"))
              for use in library_uses(p, COMPARE_USES if p.name == "compare.py" else DEMO_USES)]
    assert not beyond, "the demo imports library internals it has not declared:\n" + "\n".join(beyond)
    planted = tmp_path / "m.py"
    planted.write_text("import avmatch\nfrom avmatch.demo import scenes\nfrom avmatch.matching import match_corpora\n\n"
                       "def f():\n    from avmatch.checkpoint import load_trained\n    return avmatch.adapt, avmatch.load\n")
    assert library_uses(planted, DEMO_USES) == ["3: avmatch.matching.match_corpora",
                                                "6: avmatch.checkpoint.load_trained", "7: avmatch.adapt"]
