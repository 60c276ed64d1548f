import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from pom_common.scns import ScnsError, read_scns

from ..helpers import AIS_MINI

TS_001 = AIS_MINI / "tomograms" / "TS_001.scns"


def test_reads_real_ais_file():
    ann = read_scns(TS_001)
    assert ann.shape == (40, 160, 160)
    assert ann.pixel_size == pytest.approx(1.568, rel=1e-6)
    assert ann.source_path.endswith("TS_001.mrc")
    assert [f.title for f in ann.features] == ["Cytoplasm", "Mitochondrion", "Vesicle", "Void"]
    cyto = ann.features[0]
    assert cyto.boxes[22] == ((34, 98), (51, 63), (148, 60))
    assert list(cyto.boxes)[:2] == [22, 21]  # Ais key order kept
    mask = cyto.slices[22]
    assert mask.shape == (160, 160) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert type(mask) is np.ndarray
    assert cyto.box_size == 64 and cyto.colour is not None


def test_reading_does_not_import_ais_or_dill():
    code = (
        "import sys\n"
        "from pom_common.scns import read_scns\n"
        f"read_scns({str(TS_001)!r})\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('Ais', 'dill', 'OpenGL', 'scNodes')])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, eval, exec])
def test_code_payload_is_refused_and_not_run(tmp_path, func):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "evil.scns"
    path.write_bytes(pickle.dumps(_Payload(func, arg), protocol=4))
    with pytest.raises(ScnsError) as info:
        read_scns(path)
    assert "evil.scns" in str(info.value) and "refused" in str(info.value)
    assert not marker.exists()


def test_payload_hidden_inside_a_real_file_is_refused(tmp_path):
    data = TS_001.read_bytes()
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=4)
    path = tmp_path / "mixed.scns"
    path.write_bytes(evil[:-1] + data[2:])  # payload first, then the frame
    with pytest.raises(ScnsError):
        read_scns(path)
    assert not marker.exists()


def test_truncated(tmp_path):
    path = tmp_path / "t.scns"
    path.write_bytes(TS_001.read_bytes()[:50000])
    with pytest.raises(ScnsError, match="t.scns: truncated"):
        read_scns(path)


def test_not_a_pickle(tmp_path):
    path = tmp_path / "n.scns"
    path.write_text("hello")
    with pytest.raises(ScnsError, match="n.scns: not a pickle"):
        read_scns(path)


def test_with_map_is_refused_clearly(tmp_path):
    # "Save with map" pickles an mrcfile object: emulate its global reference.
    data = TS_001.read_bytes()
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=4).dump({"map": 1})
    forged = data.replace(b"\x8c\x0cincludes_map\x94\x89", b"\x8c\x0cincludes_map\x94\x88", 1)
    path = tmp_path / "m.scns"
    path.write_bytes(forged)
    with pytest.raises(ScnsError, match="with map"):
        read_scns(path)


def test_mrcfile_global_is_reported_as_with_map(tmp_path):
    path = tmp_path / "w.scns"
    path.write_bytes(b"\x80\x04\x8c\x0fmrcfile.mrcfile\x8c\x07MrcFile\x93.")
    with pytest.raises(ScnsError, match="with map"):
        read_scns(path)


@pytest.mark.parametrize("module", ["Ais.core.se_frame", "scNodes.core.se_frame", "core.se_frame"])
def test_all_module_generations(tmp_path, module, monkeypatch):
    import types

    fake = types.ModuleType(module)

    class SEFrame:
        pass

    class Segmentation:
        pass

    for cls in (SEFrame, Segmentation):
        cls.__module__ = module
        cls.__qualname__ = cls.__name__
        setattr(fake, cls.__name__, cls)
    parts = module.split(".")
    for i in range(1, len(parts)):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    monkeypatch.setitem(sys.modules, module, fake)
    frame = SEFrame()
    feature = Segmentation()
    feature.title, feature.boxes, feature.slices = "Void", {5: [[10, 12]]}, {5: np.ones((16, 20), np.uint8)}
    frame.n_slices, frame.height, frame.width, frame.features = 10, 16, 20, [feature]  # no pixel_size (old Ais)
    path = tmp_path / "old.scns"
    path.write_bytes(pickle.dumps(frame, protocol=2))
    for i in range(1, len(parts) + 1):
        monkeypatch.delitem(sys.modules, ".".join(parts[:i]))
    ann = read_scns(path)
    assert ann.shape == (10, 16, 20) and ann.pixel_size is None
    assert ann.features[0].boxes == {5: ((10, 12),)}

