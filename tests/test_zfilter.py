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


def test_memmap_input_is_not_copied_whole(tmp_path, monkeypatch):
    path = tmp_path / "v.raw"
    data = np.random.default_rng(2).standard_normal((40, 16, 16)).astype(np.float32)
    data.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=data.shape)
    seen = []
    real_kernels = zfilter._kernels()

    def spy_kernels():
        bin_xy, combine = real_kernels

        def bin_spy(chunk, b, out):
            seen.append(chunk.shape[0])
            return bin_xy(chunk, b, out)

        return bin_spy, combine

    monkeypatch.setattr(zfilter, "_kernels", spy_kernels)
    _close(zfilter_bin(mm, 3), zfilter_bin_reference(data, 3))
    assert max(seen) <= zfilter._CHUNK  # the volume is read in bounded chunks


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
