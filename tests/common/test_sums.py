"""Statistics streamed piece by piece equal NumPy's to the bit (header statistics, volume normalisation)."""

import mrcfile
import numpy as np
import pytest

from pom_common.mrcio import new_volume
from pom_common.normalise import standardise_local, standardise_local_reference, standardise_volume
from pom_common.sums import StreamStd, numpy_mean_std, pairwise_sum


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
    expected = reference.read_bytes()
    for order in ("in order", "out of order"):
        target = tmp_path / f"new-{order}.mrc"
        starts = list(range(0, shape[0], 4))
        with new_volume(target, shape, dtype, 20.0) as volume:
            for z0 in (starts if order == "in order" else starts[::-1]):
                volume.write(z0, data[z0 : z0 + 4])
        written = target.read_bytes()
        # every byte but rms (header word 55), which is taken in one pass in float64
        assert written[:RMS] + written[RMS + 4 :] == expected[:RMS] + expected[RMS + 4 :], order
        ours, theirs = (float(np.frombuffer(b, np.float32, 1, RMS)[0]) for b in (written, expected))
        assert abs(ours - theirs) <= 1e-6 * theirs, order


#: Byte offset of the rms field of an MRC header.
RMS = 216


def _cases(rng):
    yield "uniform", rng.random((7, 90, 110), dtype=np.float32)
    yield "offset", (rng.standard_normal((5, 64, 70)) * 3 + 1000).astype(np.float32)
    sparse = np.zeros((6, 80, 90), np.float32)
    sparse.flat[rng.integers(0, sparse.size, 3)] = 1
    yield "sparse", sparse
    yield "constant", np.full((4, 33, 50), 0.3, np.float32)
    yield "bytes", (rng.random((5, 40, 61)) * 127).round().astype(np.int8)
    yield "one", np.array([[[2.5]]], np.float32)


def test_one_pass_std_is_within_numpys_own_rounding_and_does_not_depend_on_the_pieces():
    """rms in one pass: within a few float32 ulps of NumPy's float32 two-pass std (exact 0 for constants),
    the same bits however the array is cut, NaN when NaN is present."""
    rng = np.random.default_rng(11)
    for name, a in _cases(rng):
        flat = a.reshape(-1)
        results = set()
        for _ in range(6):
            stream = StreamStd()
            for piece in np.split(flat, np.sort(rng.integers(0, flat.size, int(rng.integers(0, 7))))):
                stream.feed(piece)
            results.add(stream.result())
        assert len(results) == 1, name
        ours, exact = results.pop(), float(np.std(a.astype(np.float64)))
        numpy32 = float(a.std(dtype=np.float32))
        assert abs(ours - exact) <= 1e-12 * max(exact, 1e-30) + 1e-15, name
        assert abs(np.float32(ours) - numpy32) <= 1e-6 * numpy32 + 1e-6 * abs(float(a.mean(dtype=np.float64))), name
    assert StreamStd().result() != StreamStd().result()  # nothing fed: NaN
    with_nan = StreamStd()
    with_nan.feed(np.array([1.0, np.nan, 2.0], np.float32))
    assert np.isnan(with_nan.result())


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
