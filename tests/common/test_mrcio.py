import os

import mrcfile
import numpy as np
import pytest

from pom_common.errors import InputError
from pom_common.mrcio import new_volume, read_volume, write_volume

from ..helpers import REAL_MRC

MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_round_trip_every_mode(tmp_path, mode):
    rng = np.random.default_rng(mode)
    data = (rng.random((5, 6, 7)) * 100).astype(MODES[mode])
    path = tmp_path / f"m{mode}.mrc"
    write_volume(path, data, voxel_size=7.5)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == mode
    vol = read_volume(path)
    assert isinstance(vol.data, np.memmap)
    assert vol.data.dtype == data.dtype and np.array_equal(vol.data, data)
    assert vol.voxel_size == pytest.approx(7.5) and vol.voxel_size_from_header


def test_uint8_is_written_like_ais(tmp_path):
    data = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    write_volume(tmp_path / "u.mrc", data, 3.0)
    vol = read_volume(tmp_path / "u.mrc")
    assert vol.data.dtype == np.uint16 and np.array_equal(vol.data, data)


@pytest.mark.parametrize("unset", [0.0, 1.0])
def test_voxel_size_fallback(tmp_path, unset):
    write_volume(tmp_path / "v.mrc", np.zeros((2, 4, 4), np.float32), unset)
    vol = read_volume(tmp_path / "v.mrc", fallback_voxel_size=15.68)
    assert vol.voxel_size == pytest.approx(15.68) and not vol.voxel_size_from_header


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.mrc"
    with pytest.raises(RuntimeError):
        with new_volume(target, (3, 4, 4), np.float32, 10.0) as data:
            data[0] = 1
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "out.mrc"
    write_volume(target, np.ones((2, 2, 2), np.float32), 1.5)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mrcfile.mrcfile.MrcFile, "set_data", boom)
    with pytest.raises(OSError):
        write_volume(target, np.zeros((2, 2, 2), np.float32), 1.5)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["out.mrc"]


def test_new_volume_slice_by_slice(tmp_path):
    target = tmp_path / "s.mrc"
    with new_volume(target, (3, 4, 5), np.float32, 31.36) as data:
        for z in range(3):
            data[z] = z
    vol = read_volume(target)
    assert vol.shape == (3, 4, 5) and vol.voxel_size == pytest.approx(31.36)
    assert np.array_equal(vol.data[:, 0, 0], [0, 1, 2])


def test_small_real_map_reads():
    vol = read_volume(REAL_MRC / "EMD-3197.map")
    assert vol.shape == (20, 20, 20) and vol.voxel_size == pytest.approx(11.4, rel=1e-3)


def test_nonstandard_axis_order_is_refused():
    with pytest.raises(InputError, match="axis order"):
        read_volume(REAL_MRC / "EMD-3001.map")


def test_corrupt_header(tmp_path):
    path = tmp_path / "bad.mrc"
    path.write_bytes(b"\x00" * 2000)
    with pytest.raises(InputError, match="bad.mrc"):
        read_volume(path)


def test_truncated_data(tmp_path):
    path = tmp_path / "t.mrc"
    write_volume(path, np.zeros((4, 8, 8), np.float32), 2.0)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="t.mrc"):
        read_volume(path)


def test_2d_image_refused(tmp_path):
    path = tmp_path / "img.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((8, 8), np.float32))
    with pytest.raises(InputError, match="3D volume"):
        read_volume(path)
