"""Imports point one way: pom_tools -> pom_training -> pom_inference -> pom_common.

pom_common and pom_inference never import TensorFlow, Keras or tf2onnx: not when imported
(checked in a subprocess), and not anywhere in their source, a function body included
(checked statically, so a lazy import inside a function that no test calls is caught too).
"""

import pkgutil
import subprocess
import sys

import pom_common
import pom_inference

from .sources import imports, modules

FORBIDDEN = ("tensorflow", "keras", "tf2onnx")
#: What each package may import of the others.
ALLOWED = {"pom_common": set(), "pom_inference": {"pom_common"},
           "pom_training": {"pom_common", "pom_inference"}, "pom_tools": {"pom_common", "pom_inference", "pom_training"}}


def _modules(package):
    yield package.__name__
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        yield info.name


def test_no_tensorflow_in_common_and_inference():
    modules = sorted(set(_modules(pom_common)) | set(_modules(pom_inference)))
    assert "pom_inference.cli" in modules and "pom_common.scns" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"forbidden imports: {result.stdout.strip()}"


def test_pom_cli_help_needs_no_tensorflow():
    code = (
        "import sys\n"
        "from pom_training import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('LOADED:' + ','.join(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "LOADED:", result.stdout


def test_no_tensorflow_anywhere_in_the_source_of_common_and_inference():
    found = [f"{path}:{imp.line}: {imp.module}" for package in ("pom_common", "pom_inference")
             for module, path in modules(package).items() for imp in imports(module, path)
             if imp.module.split(".")[0] in FORBIDDEN]
    assert found == []


def test_the_static_check_sees_a_lazy_import(tmp_path):
    path = tmp_path / "lazy.py"
    path.write_text("import os\n\ndef f():\n    import tensorflow as tf\n    return importlib.import_module('keras')\n")
    found = [(imp.module, imp.local) for imp in imports("pkg.lazy", path)]
    assert ("tensorflow", True) in found and ("keras", True) in found and ("os", False) in found


def test_imports_point_one_way():
    wrong = [f"{path}:{imp.line}: {imp.module}" for package, allowed in ALLOWED.items()
             for module, path in modules(package).items() for imp in imports(module, path)
             if imp.module.split(".")[0] in ALLOWED and imp.module.split(".")[0] not in allowed | {package}]
    assert wrong == []
