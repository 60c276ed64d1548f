"""Statistics streamed piece by piece equal NumPy's to the bit (header statistics, volume normalisation)."""

import mrcfile
import numpy as np
import pytest

from pom_common.mrcio import new_volume
from pom_common.normalise import standardise_local, standardise_local_reference, standardise_volume
from pom_common.sums import numpy_mean_std, pairwise_sum


def _pieces(flat, cuts):
    return lambda: iter(np.split(flat, cuts))


@pytest.mark.parametrize("dtype, acc, cast", [(np.float32, np.float32, False), (np.uint16, np.float32, True),
                                              (np.int16, np.float32, True), (np.float32, np.float64, True)])
def test_streamed_mean_and_std_equal_numpys(dtype, acc, cast):
    rng = np.random.default_rng(7)
    for _ in range(25):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 200)), int(rng.integers(1, 300)))
        a = (rng.random(shape) * 200).astype(dtype)
        flat = a.reshape(-1)
        cuts = np.sort(rng.integers(0, flat.size, int(rng.integers(0, 9))))
        mean, std = numpy_mean_std(flat.size, _pieces(flat, cuts), acc, cast)
        assert mean == a.mean(dtype=acc) and std == a.std(dtype=acc), (shape, cuts)


def test_pairwise_sum_of_a_whole_array():
    a = np.random.default_rng(1).random(100_003, dtype=np.float32)
    assert pairwise_sum(a) == np.add.reduce(a)
    assert pairwise_sum(a.astype(np.float64), np.float64) == np.add.reduce(a.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_slab_written_file_equals_mrcfiles_bytes(tmp_path, dtype):
    """Header statistics computed slab by slab: the same file, byte for byte, as mrcfile's whole-array way."""
    rng = np.random.default_rng(3)
    shape = (9, 70, 61)
    data = (rng.random(shape) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    reference = tmp_path / "ref.mrc"
    with mrcfile.new_mmap(reference, shape=shape, mrc_mode=6 if dtype == np.uint8 else 2, overwrite=True) as mrc:
        mrc.voxel_size = 20.0
        mrc.header.label[0] = b"Created by pom-onnx"
        mrc.header.nlabl = 1
        mrc.data[:] = data
        mrc.update_header_stats()
    for order in ("in order", "out of order"):
        target = tmp_path / f"new-{order}.mrc"
        starts = list(range(0, shape[0], 4))
        with new_volume(target, shape, dtype, 20.0) as volume:
            for z0 in (starts if order == "in order" else starts[::-1]):
                volume.write(z0, data[z0 : z0 + 4])
        assert target.read_bytes() == reference.read_bytes(), order


def test_local_standardisation_equals_the_numpy_definition():
    rng = np.random.default_rng(0)
    for shape, window in (((3, 10, 12), 64), ((4, 20, 24), 16), ((2, 7, 90), 32), ((3, 1, 9), 5), ((2, 33, 17), 1)):
        a = (rng.standard_normal(shape) * 5 + 3).astype(np.float32)
        a[0, :2] = 1.5  # a flat patch: only centred
        expected = standardise_local_reference(a.copy(), window)
        assert np.array_equal(standardise_local(a.copy(), window), expected)
        channels = np.zeros((*shape, 3), np.float32)  # one channel of a stacked input: a strided view
        channels[..., 1] = a
        standardise_local(channels[..., 1], window)
        assert np.array_equal(channels[..., 1], expected)


def test_volume_standardisation_equals_numpys():
    a = (np.random.default_rng(2).standard_normal((17, 40, 33)) * 3 + 2).astype(np.float32)
    expected = a.copy()
    mean, std = float(expected.mean(dtype=np.float64)), float(expected.std(dtype=np.float64))
    expected -= mean
    expected /= std
    assert np.array_equal(standardise_volume(a), expected)
