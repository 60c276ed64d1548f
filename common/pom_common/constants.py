"""Named constants shared by training and inference."""

#: Channel name of the tomogram itself (Pom's convention).
DENSITY = "Density"
#: Name of the extra class of the shared model.
UNKNOWN = "Unknown"
#: Binning factor between tomogram voxels and network pixels (Pom bins 2x).
BIN_FACTOR = 2
#: Macromolecule channels are uint8 0..255; networks see v / 255 * 2 - 1.
CHANNEL_SCALE = 255.0
#: Header voxel sizes that mean "not set"; the configuration's apix is used instead.
UNSET_VOXEL_SIZES = (0.0, 1.0)
#: Largest z_sum accepted (a window of 257 slices is thicker than any lamella).
MAX_Z_SUM = 128
#: Name of the project configuration file (Pom's).
CONFIG_FILENAME = "project_configuration.json"
#: Version of the ONNX metadata layout written by export.
METADATA_VERSION = "1"
#: ONNX opset used for export (tf2onnx supports up to 18).
ONNX_OPSET = 17


def rotations_for(runs: int) -> tuple[tuple[int, bool], ...]:
    """Test-time augmentation table: (number of 90-degree rotations, flip) pairs.

    ``runs`` 1..4 gives that many rotations without flips (Pom's
    shared_model_runs_per_volume); 8 gives the 4 rotations each with and without a flip.
    """
    if runs == 8:
        return tuple((k, f) for k in range(4) for f in (False, True))
    if not 1 <= runs <= 4:
        raise ValueError(f"TTA runs must be 1, 2, 3, 4 or 8, got {runs}")
    return tuple((k, False) for k in range(runs))
