"""z-consistency (``z_smooth`` in a model's metadata): the same bits slab by slab as at once, in every path."""

import json

import numpy as np
import onnx
import pytest

from pom_common.errors import ModelError
from pom_common.modelmeta import METADATA_KEY, ModelInfo
from pom_common.mrcio import read_volume
from pom_inference import iter_slabs, load_model, segment
from pom_inference.cli import main as infer_main
from pom_inference.zsmooth import SmoothedSink, ZSmoother, smooth_slabs

from ..helpers import AIS_MINI, DATA
from .test_segment_api import _volumes


def reference(volume: np.ndarray, window: int) -> np.ndarray:
    """Each slice the mean of the slices within (window - 1) / 2 of it that exist, summed in order."""
    r, nz = (window - 1) // 2, len(volume)
    out = np.empty(volume.shape, np.float32)
    for z in range(nz):
        lo, hi = max(0, z - r), min(nz - 1, z + r)
        total = volume[lo].astype(np.float32).copy()
        for k in range(lo + 1, hi + 1):
            total += volume[k]
        out[z] = total / np.float32(hi - lo + 1)
    return out


@pytest.mark.parametrize("window", [1, 3, 5])
@pytest.mark.parametrize("slab", [1, 2, 7, 40])
def test_slab_by_slab_equals_the_whole_volume(window, slab):
    volume = np.random.default_rng(window * 100 + slab).random((17, 5, 6, 3), dtype=np.float32)
    parts = [(z0, volume[z0 : z0 + slab]) for z0 in range(0, len(volume), slab)]
    out = list(smooth_slabs(iter(parts), window, len(volume)))
    starts = [z0 for z0, _ in out]
    assert starts == sorted(starts) and starts[0] == 0
    whole = np.concatenate([block for _, block in out])
    np.testing.assert_array_equal(whole, volume if window == 1 else reference(volume, window))
    if window > 1:  # a constant is kept, a one-slice spike is spread over `window` slices
        spike = np.zeros((9, 2, 2, 1), np.float32)
        spike[4] = 1
        smoothed = np.concatenate([b for _, b in smooth_slabs(iter([(0, spike)]), window, 9)])
        assert smoothed[4, 0, 0, 0] == pytest.approx(1 / window)


def test_sink_smooths_planes_along_their_slice_axis_and_rounds_codes():
    class Keep:
        def __init__(self):
            self.blocks = []

        def write(self, z0, planes):
            self.blocks.append((z0, planes.copy()))

    planes = np.random.default_rng(1).integers(0, 128, (2, 11, 4, 5)).astype(np.int8)  # (Kc, n, h, w) codes
    kept = Keep()
    sink = SmoothedSink(kept, 3, 11)
    for z0 in range(0, 11, 4):
        buffer = planes[:, z0 : z0 + 4].copy()
        sink.write(z0, buffer)
        buffer[:] = -1  # the predictor reuses its buffers: the sink must have copied them
    sink.finish()
    got = np.concatenate([b for _, b in kept.blocks], axis=1)
    assert got.dtype == np.int8
    expected = np.rint(np.moveaxis(reference(np.moveaxis(planes, 1, 0), 3), 0, 1)).astype(np.int8)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="in order"):
        ZSmoother(3, 11).push(4, planes[:, :2])
    with pytest.raises(ValueError, match="odd"):
        ZSmoother(2, 11)


def test_metadata_z_smooth_is_optional_odd_and_left_out_when_one():
    info = ModelInfo(kind="shared", classes=("A", "B"), channels=("Density",), z_sum=1)
    assert "z_smooth" not in json.loads(info.to_json())  # models without it carry what they always did
    assert ModelInfo.from_json(info.to_json(), "m.onnx").z_smooth == 1
    doc = json.loads(info.to_json())
    assert ModelInfo.from_json(json.dumps({**doc, "z_smooth": 3}), "m.onnx").z_smooth == 3
    for bad in (2, 0, 99, "3"):
        with pytest.raises(ModelError, match="z_smooth"):
            ModelInfo.from_json(json.dumps({**doc, "z_smooth": bad}), "m.onnx")


def _with_z_smooth(source, target, window):
    proto = onnx.load(str(source))
    entry = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "z_smooth": window})
    onnx.save(proto, str(target))
    return target


def test_a_smoothing_model_gives_the_same_bits_in_every_path(tmp_path):
    golden = DATA / "golden" / "shared.onnx"
    smoothing = _with_z_smooth(golden, tmp_path / "shared_z3.onnx", 3)
    volumes = _volumes()
    plain = segment(load_model(golden), volumes, tta=1)
    model = load_model(smoothing)
    assert model.info.z_smooth == 3
    smoothed = segment(model, volumes, tta=1)
    np.testing.assert_array_equal(smoothed, reference(plain, 3))
    starts, parts = zip(*iter_slabs(model, volumes, tta=1, slab=5))
    assert list(starts) == sorted(starts)
    np.testing.assert_array_equal(np.concatenate(parts), smoothed)
    out = tmp_path / "out"
    assert infer_main(["process", str(smoothing), "--tomograms", str(AIS_MINI / "tomograms"),
                       "--macromolecules", str(AIS_MINI / "macromolecules"), "--output", str(out),
                       "--gpus", "cpu", "--tta", "1", "--batch", "3"]) == 0
    for k, name in enumerate(model.info.classes):
        np.testing.assert_array_equal(np.asarray(read_volume(out / f"TS_001__{name}.mrc").data), smoothed[..., k])


def test_smoothing_gives_the_same_files_with_and_without_overlapped_writing(tmp_path):
    """z-smoothing runs in the writing thread when writes overlap, inline otherwise: the same bytes."""
    from pom_inference.driver import process
    from pom_inference.worker import ProcessOptions

    smoothing = _with_z_smooth(DATA / "golden" / "shared.onnx", tmp_path / "shared_z3.onnx", 3)
    files = {}
    for overlap in (True, False):
        opts = ProcessOptions(model=str(smoothing), tomograms=(str(AIS_MINI / "tomograms" / "TS_001.mrc"),),
                              channel_dirs=(str(AIS_MINI / "macromolecules"),), output_dir=str(tmp_path / f"o{overlap}"),
                              tta=2, batch=3, overlap=overlap)
        assert not process(opts, [None], progress=False).failed
        files[overlap] = {p.name: p.read_bytes() for p in (tmp_path / f"o{overlap}").glob("*.mrc")}
    assert files[True] == files[False] and files[True]
