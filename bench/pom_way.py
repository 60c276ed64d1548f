"""How the original Pom segments one tomogram, re-implemented for measurement only.

Faithful to Pom's ``phase_2_process``/``segment_tomo`` (a804c9d): the whole volume is read
and z-filtered as float64 with scipy's convolve1d, binned, then every slice is predicted
with Keras ``model.predict`` once per TTA rotation, cropped to a multiple of 32, and each
class is written as a float32 MRC.
"""

from __future__ import annotations

import mrcfile
import numpy as np
from scipy.ndimage import convolve1d


def bin_vol(vol, b=2):
    j, k, l = vol.shape  # noqa: E741 - Pom's names
    vol = vol[: j // b * b, : k // b * b, : l // b * b]
    return vol.reshape((j // b, b, k // b, b, l // b, b)).mean(5).mean(3).mean(1)


def segment_pom_way(model, tomogram: str, out_paths: list[str], z_sum: int, runs: int, apix: float) -> None:
    vol = mrcfile.read(tomogram).astype(np.float64)
    w = 2 * z_sum + 1
    vol = bin_vol(convolve1d(vol, np.ones(w) / w, axis=0, mode="nearest"), 2)
    vol = (vol - vol.mean()) / vol.std()
    data_x = vol[..., None].astype(np.float32)
    n_out = model.output_shape[-1]
    data_y = np.zeros((*data_x.shape[:3], n_out), dtype=np.float32)
    for j in range(data_x.shape[0]):
        for k in range(runs):
            rotated = np.rot90(data_x[j], k=k, axes=(0, 1))
            h, w_ = rotated.shape[0] // 32 * 32, rotated.shape[1] // 32 * 32
            pred = np.zeros((*rotated.shape[:2], n_out), np.float32)
            pred[:h, :w_] = model.predict(rotated[None, :h, :w_], verbose=0)[0]
            data_y[j] += np.rot90(pred, k=-k, axes=(0, 1))
    data_y /= runs
    for k, path in enumerate(out_paths):
        with mrcfile.new(path, overwrite=True) as f:
            f.set_data(data_y[..., k].astype(np.float32))
            f.voxel_size = apix * 2
