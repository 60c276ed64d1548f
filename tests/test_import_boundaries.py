"""pom_common and pom_inference never import TensorFlow, Keras or tf2onnx."""

import pkgutil
import subprocess
import sys

import pom_common
import pom_inference

FORBIDDEN = ("tensorflow", "keras", "tf2onnx")


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
