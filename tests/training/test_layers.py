"""The training package's architecture, checked on its source (no import needed, nothing run).

* Sub-packages in layers, imports pointing down only: data, models, evaluation at the bottom;
  fitting on models; labels and export on those; the workflow steps (prepare, train) on
  them; commands, then cli on top. No import cycle between modules.
* Imports at the top of modules; inside functions only in ``commands`` (the command entry,
  which imports what needs the training extra when a command runs).
* No module over 300 lines.
* The label methods' names appear only in the registry and the method modules.
"""

from pom_common.config import LABEL_METHODS
from pom_training.labels.registry import METHODS

from ..sources import PACKAGES, imports, modules, string_constants

PACKAGE = "pom_training"
#: Lowest first; a unit (sub-package or top-level module) imports its own unit and lower layers only.
LAYERS = [{"data", "models", "evaluation", "processing", "doctor"}, {"fitting"}, {"export", "labels"},
          {"prepare", "train", "view"}, {"commands"}, {"cli"}]
#: The one module that imports inside functions (the optional heavy dependencies, at command entry).
COMMAND_ENTRY = f"{PACKAGE}.commands"
MAX_LINES = 300
#: Where the label methods' names may be written.
METHOD_MODULES = {f"{PACKAGE}.labels.{name}" for name in ("registry", "pom", "painted", "direct")}
#: The same words meaning something else: (module, word) -> why.
HOMONYMS = {(f"{PACKAGE}.cli", "pom"): "the program's name",
            (f"{PACKAGE}.export.convert", "pom"): "the exported graph's name"}

MODULES = modules(PACKAGE)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(unit: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def _internal_imports(module: str) -> set[str]:
    return {imp.module for imp in imports(module, MODULES[module]) if imp.module in MODULES and imp.module != PACKAGE}


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in MODULES} - {""}
    assert units == set().union(*LAYERS)


def test_imports_point_down_the_layers():
    wrong = []
    for module in MODULES:
        if module == PACKAGE:
            continue
        unit = _unit(module)
        for target in _internal_imports(module):
            other = _unit(target)
            if other != unit and _layer(other) >= _layer(unit):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycle():
    graph = {module: _internal_imports(module) for module in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_imports_at_the_top_except_at_command_entry():
    local = [f"{MODULES[m]}:{imp.line}: {imp.module}" for m in MODULES if m != COMMAND_ENTRY
             for imp in imports(m, MODULES[m]) if imp.local]
    assert local == []


def test_no_module_over_300_lines():
    long = {str(path): n for path in sorted(PACKAGES[PACKAGE].rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_registry_knows_the_methods_the_configuration_accepts():
    assert set(METHODS) == set(LABEL_METHODS)
    assert all(name == method.name for name, method in METHODS.items())


def test_label_method_names_only_in_the_registry_and_the_method_modules():
    names = set(METHODS)
    found = [f"{MODULES[m]}:{line}: {value!r}" for m in MODULES if m not in METHOD_MODULES
             for value, line in string_constants(MODULES[m]) if value in names and (m, value) not in HOMONYMS]
    assert found == []
