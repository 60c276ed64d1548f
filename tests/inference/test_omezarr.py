"""OME-Zarr outputs (``--format ome-zarr``), read back with zarr and ome-zarr (the ``[zarr]`` extra)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from pom_common.mrcio import read_volume
from pom_inference.cli import main as infer_main

from ..helpers import AIS_MINI, DATA

zarr = pytest.importorskip("zarr", reason="the [zarr] extra is not installed (pip install 'pom-onnx[zarr]')")
ome_zarr_reader = pytest.importorskip("ome_zarr.reader", reason="ome-zarr is not installed (the [zarr] extra)")

from pom_inference.forms import FormWriter, OutputForm  # noqa: E402
from pom_inference.omezarr import check_complete, downsample, level_shapes, new_store, read_level  # noqa: E402

SHARED = DATA / "golden" / "shared.onnx"


def _read_ome(path):
    """Every level of the image and its metadata, as ome-zarr's reader gives them."""
    from ome_zarr.io import parse_url

    node = next(iter(ome_zarr_reader.Reader(parse_url(str(path)))()))
    return [np.asarray(level) for level in node.data], node.metadata


def test_store_is_multiscale_chunked_with_the_voxel_size(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.random((40, 200, 150), dtype=np.float32)
    path = tmp_path / "TS__A.ome.zarr"
    with new_store(path, volume.shape, np.float32, 15.68) as out:
        for z0 in range(0, 40, 16):  # slabs, as the worker writes them
            out.write(z0, volume[z0 : z0 + 16])
    levels, meta = _read_ome(path)
    assert [lv.shape for lv in levels] == level_shapes(volume.shape) == [(40, 200, 150), (20, 100, 75), (10, 50, 37)]
    assert np.array_equal(levels[0], volume)
    assert np.allclose(levels[1], volume.reshape(20, 2, 100, 2, 75, 2).mean(axis=(1, 3, 5)), atol=1e-6)
    assert np.allclose(levels[2], downsample(levels[1], False))
    scales = [t[0]["scale"] for t in meta["coordinateTransformations"]]
    assert scales == [[15.68] * 3, [31.36] * 3, [62.72] * 3]
    assert [a["unit"] for a in meta["axes"]] == ["angstrom"] * 3
    assert zarr.open_group(str(path), mode="r")["0"].chunks == (32, 200, 150)
    data, voxel_size = read_level(path, 1)
    assert data.shape == (20, 100, 75) and voxel_size == 31.36


def test_failed_or_killed_writer_leaves_no_store(tmp_path):
    path = tmp_path / "TS__A.ome.zarr"
    with pytest.raises(RuntimeError):
        with new_store(path, (4, 8, 8), np.float32, 10.0) as out:
            out.write(0, np.ones((2, 8, 8), np.float32))
            raise RuntimeError("stopped")
    assert os.listdir(tmp_path) == []
    # Killed (SIGKILL) after a slab: only a hidden temporary folder, which the take-over's cleanup removes.
    script = ("import os, signal, numpy as np\n"
              "from pom_inference.omezarr import new_store\n"
              f"with new_store({str(path)!r}, (4, 8, 8), np.float32, 10.0, tag='g1') as out:\n"
              "    out.write(0, np.ones((2, 8, 8), np.float32))\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    left = os.listdir(tmp_path)
    assert not path.exists() and len(left) == 1 and left[0].startswith(".TS__A.ome.zarr.tmp-g1-")
    with pytest.raises(OSError, match="not a complete OME-Zarr store"):
        check_complete(tmp_path / left[0])
    writer = FormWriter(tmp_path, ("A",), (0,), "float32", OutputForm(format="ome-zarr"))
    assert writer.remove_temporaries("TS", below=2) == 1 and os.listdir(tmp_path) == []


def test_a_store_in_place_is_replaced_whole(tmp_path):
    path = tmp_path / "TS__A.ome.zarr"
    for value in (1.0, 2.0):
        with new_store(path, (4, 8, 8), np.float32, 10.0) as out:
            out.write(0, np.full((4, 8, 8), value, np.float32))
    assert os.listdir(tmp_path) == ["TS__A.ome.zarr"] and read_level(path)[0].min() == 2.0
    refused = RuntimeError("not ours any more")

    def before_replace():
        raise refused

    with pytest.raises(RuntimeError, match="not ours"):
        with new_store(path, (4, 8, 8), np.float32, 10.0, before_replace) as out:
            out.write(0, np.zeros((4, 8, 8), np.float32))
    assert os.listdir(tmp_path) == ["TS__A.ome.zarr"] and read_level(path)[0].min() == 2.0


def _process(out, *extra):
    argv = ["process", str(SHARED), "--tomograms", str(AIS_MINI / "test"), "--output", str(out), "--gpus", "cpu",
            "--tta", "1", *extra]
    return infer_main(argv)


def test_process_writes_stores_equal_to_the_mrc_outputs(tmp_path, capsys):
    mrc, zarr_out = tmp_path / "mrc", tmp_path / "zarr"
    assert _process(mrc) == 0 and _process(zarr_out, "--format", "ome-zarr") == 0
    for path in sorted(mrc.glob("TS_003__*.mrc")):
        store = zarr_out / (path.name[: -len(".mrc")] + ".ome.zarr")
        volume = read_volume(path)
        levels, meta = _read_ome(store)
        assert np.array_equal(levels[0], np.asarray(volume.data))
        assert meta["coordinateTransformations"][0][0]["scale"] == pytest.approx([volume.voxel_size] * 3)
    inode = os.stat(zarr_out / "TS_003__Void.ome.zarr").st_ino
    assert _process(zarr_out, "--format", "ome-zarr") == 0  # done: nothing redone
    assert os.stat(zarr_out / "TS_003__Void.ome.zarr").st_ino == inode
    capsys.readouterr()
    assert infer_main(["status", "--output", str(zarr_out)]) == 0
    assert "1 done" in capsys.readouterr().out


def test_label_map_store_round_trips_and_pom_evaluate_reads_it(tmp_path, capsys):
    from pom_training.cli import main as pom_main

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(AIS_MINI / "project_configuration.json", project)
    shutil.copytree(AIS_MINI / "test", project / "test")
    mrc, store_out = tmp_path / "mrc", tmp_path / "zarr"
    assert _process(mrc, "--labels") == 0 and _process(store_out, "--labels", "--format", "ome-zarr") == 0
    store = store_out / "TS_003__labels.ome.zarr"
    group = zarr.open_group(str(store), mode="r")
    assert group["0"].dtype == np.int8
    assert np.array_equal(group["0"][...], np.asarray(read_volume(mrc / "TS_003__labels.mrc").data))
    names = json.loads((store_out / "classes.json").read_text())
    properties = {str(p["label-value"]): p["class"] for p in group.attrs["image-label"]["properties"]}
    assert properties == names and names["0"] == "Unknown"
    report = tmp_path / "evaluation.json"
    argv = ["--project", str(project), "evaluate", "-m", str(SHARED), "--labels", str(store),
            "--tomogram", str(project / "test" / "TS_003.mrc"), "--tta", "1", "--json", str(report)]
    assert pom_main(argv) == 0, capsys.readouterr().err
    scored = [s for s in json.loads(report.read_text())["classes"].values() if s.get("dice") is not None]
    assert len(scored) >= 3 and min(s["dice"] for s in scored) > 0.99
