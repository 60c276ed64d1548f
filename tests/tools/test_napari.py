"""The napari view: the reader plugin through napari's plugin manager, headless (offscreen Qt), and a screenshot."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from pom_inference.cli import main as infer_main

from ..helpers import AIS_MINI, DATA

SHARED = DATA / "golden" / "shared.onnx"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with TS_003, its per-class outputs and its label map in output/."""
    root = tmp_path_factory.mktemp("view")
    config = json.loads((AIS_MINI / "project_configuration.json").read_text())
    (root / "project_configuration.json").write_text(json.dumps(config))
    (root / "tomograms").mkdir()
    shutil.copy(AIS_MINI / "test" / "TS_003.mrc", root / "tomograms")
    for args in ([], ["--labels"]):
        assert infer_main(["process", str(SHARED), "--tomograms", str(AIS_MINI / "test"), "--output",
                           str(root / "output"), "--gpus", "cpu", "--tta", "1", *args]) == 0
    return root


def test_reader_layers_are_placed_on_the_tomogram(project):
    from pom_tools.napari_reader import get_reader

    reader = get_reader(str(project))
    assert reader is not None and get_reader(str(project / "output")) is None
    layers = {meta["name"]: (data, meta, kind) for data, meta, kind in reader(str(project))}
    assert set(layers) == {"TS_003", "Cytoplasm", "Mitochondrion", "Vesicle", "Void", "Unknown", "labels"}
    tomogram, meta, kind = layers["TS_003"]
    assert kind == "image" and tomogram.shape == (40, 96, 128) and meta["scale"] == pytest.approx((15.68,) * 3)
    data, meta, kind = layers["labels"]
    assert kind == "labels" and data.shape == (20, 48, 64)
    assert meta["scale"] == pytest.approx((31.36,) * 3) and meta["translate"] == pytest.approx((7.84,) * 3)
    assert meta["colormap"][0][3] == 0  # Unknown: transparent
    # The binned grid covers the tomogram: its last voxel ends where the tomogram's does.
    for axis in range(3):
        end = meta["translate"][axis] + (data.shape[axis] - 0.5) * meta["scale"][axis]
        assert end == pytest.approx((tomogram.shape[axis] - 0.5) * 15.68)


def _quiet_napari():
    """napari's models use pydantic's V1-style API (warnings are errors here): not ours to fix; reset after the test."""
    from pydantic.warnings import PydanticDeprecatedSince20

    warnings.filterwarnings("ignore", category=PydanticDeprecatedSince20)
    warnings.filterwarnings("ignore", message="System theme detection requires a Qt6 backend", category=UserWarning)


def test_napari_plugin_manager_opens_the_project(project):
    pytest.importorskip("napari", reason="the [napari] extra is not installed (pip install 'pom-onnx[napari]')")
    _quiet_napari()
    import npe2
    from napari.components import ViewerModel  # the viewer without Qt

    npe2.PluginManager.instance().discover()  # what napari.Viewer does at start: finds our napari.manifest entry point
    assert npe2.PluginManager.instance().get_manifest("pom-onnx").display_name == "Pom-ONNX"
    viewer = ViewerModel()
    viewer.open(str(project), plugin="pom-onnx")  # through napari's (npe2) plugin manager and our manifest
    names = [layer.name for layer in viewer.layers]
    assert names[0] == "TS_003" and "labels" in names and "Mitochondrion" in names
    labels = viewer.layers["labels"]
    assert type(labels).__name__ == "Labels"
    assert tuple(labels.scale) == pytest.approx((31.36,) * 3) and tuple(labels.translate) == pytest.approx((7.84,) * 3)
    assert tuple(viewer.layers["TS_003"].scale) == pytest.approx((15.68,) * 3)


def test_pom_view_screenshot_shows_the_segmentation_on_the_tomogram(project, tmp_path):
    """``pom view TS_003 --screenshot``, in napari's Qt viewer on a virtual X server (Qt's offscreen platform has no OpenGL)."""
    pytest.importorskip("napari", reason="the [napari] extra is not installed (pip install 'pom-onnx[napari]')")
    from PIL import Image

    if shutil.which("xvfb-run") is None:
        pytest.skip("no xvfb-run: napari's canvas needs OpenGL, which Qt's offscreen platform lacks here "
                    "(make view-test installs xvfb)")
    shot = tmp_path / "view.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, "-m", "pom_training.cli",
                           "--project", str(project), "view", "TS_003", "--screenshot", str(shot)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[0] > 200 and image.shape[1] > 200
    spread = image.max(axis=2) - image.min(axis=2)
    assert (spread > 60).mean() > 0.05  # class colours
    assert ((spread < 12) & (image.mean(axis=2) > 40)).mean() > 0.01  # the grey tomogram where no class is shown
    if os.environ.get("POM_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["POM_KEEP_SCREENSHOT"])
