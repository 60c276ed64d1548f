import numpy as np
import pytest

from pom_common import zfilter
from pom_common.zfilter import zfilter_bin, zfilter_bin_reference

DTYPES = [np.int8, np.int16, np.float16, np.float32, np.uint16]
SHAPES = [(7, 9, 11), (40, 33, 31), (3, 4, 4), (1, 5, 5), (2, 6, 3)]


def _close(a, b):
    assert a.shape == b.shape and a.dtype == np.float32
    if a.size:
        scale = max(float(np.abs(b).max()), 1e-12)
        assert float(np.abs(a - b).max()) / scale < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_scipy_reference(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    volume = (rng.standard_normal(shape) * 40).astype(dtype)
    for z_sum in range(7):  # includes windows wider than the volume
        _close(zfilter_bin(volume, z_sum), zfilter_bin_reference(volume, z_sum))


def test_other_bin_factors():
    volume = np.random.default_rng(1).standard_normal((13, 17, 19)).astype(np.float32)
    for b in (1, 3):
        _close(zfilter_bin(volume, 2, b), zfilter_bin_reference(volume, 2, b))


def test_memmap_input_streams_in_blocks(tmp_path, monkeypatch):
    path = tmp_path / "v.raw"
    data = np.random.default_rng(2).standard_normal((40, 16, 16)).astype(np.float32)
    data.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=data.shape)
    drops = []
    monkeypatch.setattr(zfilter, "_DROP_BYTES", 4096)  # a few rows per block
    real_drop = zfilter._drop_pages
    monkeypatch.setattr(zfilter, "_drop_pages", lambda m: (drops.append(1), real_drop(m)))
    _close(zfilter_bin(mm, 3), zfilter_bin_reference(data, 3))
    assert len(drops) > 1  # read block by block, pages released after each


def test_float16_goes_through_chunks(monkeypatch):
    volume = np.random.default_rng(4).standard_normal((30, 8, 10)).astype(np.float16)
    monkeypatch.setattr(zfilter, "_CHUNK", 4)
    _close(zfilter_bin(volume, 2), zfilter_bin_reference(volume, 2))


def test_kernels_fall_back_when_cache_cannot_be_written(monkeypatch):
    import numba

    real_njit = numba.njit

    def njit(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    zfilter._kernels.cache_clear()
    try:
        volume = np.random.default_rng(3).standard_normal((6, 8, 8)).astype(np.float32)
        _close(zfilter_bin(volume, 1), zfilter_bin_reference(volume, 1))
    finally:
        zfilter._kernels.cache_clear()


def test_rejects_non_3d():
    with pytest.raises(ValueError, match="nz, ny, nx"):
        zfilter_bin(np.zeros((4, 4), np.float32), 1)
