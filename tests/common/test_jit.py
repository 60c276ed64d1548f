"""Kernels are cached on disk when numba can, compiled in memory when it cannot."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from pom_common.jit import compiled


def test_compiled_falls_back_to_memory_when_the_cache_cannot_be_written():
    calls = []

    def build(cache):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function 'k': no locator available for file 'x.py'")
        return "in memory"

    assert compiled(build) == "in memory"
    assert calls == [True, False]


def test_compiled_uses_the_disk_cache_when_it_can():
    assert compiled(lambda cache: cache) is True


def test_a_real_kernel_from_a_read_only_folder_compiles_in_memory():
    """A numba kernel in a module whose folder its user cannot write, with no cache folder: it still runs."""
    base = Path(tempfile.mkdtemp(prefix="pom-jit-", dir="/tmp"))
    try:
        (base / "kernelmod.py").write_text(textwrap.dedent("""
            import functools
            from pom_common.jit import compiled

            tried = []

            @functools.cache
            def kernel():
                import numba

                def build(cache):
                    tried.append(cache)

                    @numba.njit(cache=cache)
                    def twice(x):
                        return 2 * x
                    return twice
                return compiled(build)
        """))
        os.chmod(base, 0o555)
        command = [sys.executable, "-c", "import kernelmod; print(kernelmod.kernel()(21), kernelmod.tried)"]
        if os.geteuid() == 0:  # root writes anywhere: run it as user nobody
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: no user that cannot write the folder")
            command = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
        env.update(HOME="/nonexistent", PYTHONPATH=os.pathsep.join([str(base), *sys.path]), PYTHONDONTWRITEBYTECODE="1")
        done = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(base, 0o755)
        shutil.rmtree(base, ignore_errors=True)
    if done.returncode != 0 and "ModuleNotFoundError" in done.stderr:
        pytest.skip("user nobody cannot read this checkout or its virtual environment")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "[True,", "False]"]
