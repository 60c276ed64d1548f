"""The scoring and pictures the demo, quality and ``pom evaluate`` share: Dice on masks, binned labels, colours, figures."""

import json

import numpy as np
import pytest

from pom_training.evaluation import figure
from pom_training.evaluation.metrics import mask_dice
from pom_training.evaluation.render import feature_colours
from pom_training.evaluation.truth import bin_labels


def test_dice():
    a = np.array([1, 1, 0, 0], bool)
    assert mask_dice(a, a) == 1.0
    assert mask_dice(a, ~a) == 0.0
    assert mask_dice(a, np.array([1, 0, 0, 0], bool)) == pytest.approx(2 / 3)
    assert mask_dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_bin_labels_majority():
    labels = np.zeros((2, 2, 4), np.int8)
    labels[:, :, 2:] = 3
    labels[0, 0, 0] = 1  # a minority voxel does not win
    assert bin_labels(labels, 4).tolist() == [[[0, 3]]]


def test_feature_library_formats(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_text(json.dumps([{"title": "Void", "colour": [255, 0, 0]}]))
    assert feature_colours(plain) == {"Void": (1.0, 0.0, 0.0)}
    nested = tmp_path / "b.txt"
    nested.write_text(json.dumps({"active": "mine", "libraries": {"other": [], "mine": [
        {"title": "Vesicle", "colour": [0, 0.5, 1]}]}}))
    assert feature_colours(nested) == {"Vesicle": (0.0, 0.5, 1.0)}
    (tmp_path / "bad.txt").write_text("not json")
    assert feature_colours(tmp_path / "bad.txt") == {}


def _views(truth=True, single=False):
    """A 6-slice volume: classes 0 and 1 everywhere, class 2 only on slice 4; predictions wrong in one corner."""
    rng = np.random.default_rng(0)
    calls = np.zeros((6, 20, 30), np.int64)
    calls[:, :, 15:] = 1
    calls[4, 5:10, 5:10] = 2
    true = calls.copy()
    calls[:, :3, :3] = 1  # wrong
    classes = ("Void", "Cytoplasm", "Vesicle")
    if single:
        calls, true, classes = np.where(calls == 2, 0, -1), np.where(true == 2, 0, 1), ("Vesicle",)
    return figure.Views(density=rng.standard_normal((6, 20, 30)).astype(np.float32), calls=calls, classes=classes,
                        truth=true if truth else None, pixel_nm=2.0, bin_factor=2, depth=12)


def test_slices_show_every_class():
    views = _views()
    slices = figure.pick_slices(views)
    assert 4 in slices and len(slices) == figure.MIN_ROWS and slices == sorted(slices)
    assert figure.pick_slices(views, rows=(1, 1)) == [4]  # the slice with the most classes


def test_figure_panels_legend_scale(tmp_path):
    from PIL import Image

    colours = {"Void": (0.5, 0.5, 0.5), "Cytoplasm": (0.0, 1.0, 0.0), "Vesicle": (0.0, 0.0, 1.0)}
    plain = figure.render(_views(truth=False), colours, slices=[4])
    full = figure.render(_views(), colours, slices=[4])
    panel = 30 * (-(-figure.PANEL_SIZE // 30))  # enlarged by an integer factor to >= PANEL_SIZE
    assert full.size[0] - plain.size[0] == 2 * (panel + 6)  # truth and errors beside density and prediction
    pixels = np.asarray(full)
    assert any(np.all(pixels == (0, 0, 255), axis=-1).ravel())  # the legend's Vesicle swatch, pure blue
    assert any(np.all(pixels == figure._rgb(figure.WRONG), axis=-1).ravel())  # the wrong corner, and its swatch
    legend = figure._legend_items(_views(), [4], colours)
    assert [text for _, text in legend][:3] == ["Void", "Cytoplasm", "Vesicle"]
    assert legend[3][1].startswith("wrong class (") and "%" in legend[3][1]
    assert [t for _, t in figure._legend_items(_views(truth=False), [0], colours)] == ["Void", "Cytoplasm"]
    single = [t for _, t in figure._legend_items(_views(single=True), [4], colours)]
    assert single[0] == "Vesicle" and single[1].startswith("called, not Vesicle") and "missed" in single[2]
    path = figure.write_figure(tmp_path / "f.png", _views(), colours)
    with Image.open(path) as image:
        assert image.size[1] > 3 * 20 * (panel // 30)  # three rows of 20-pixel slices, enlarged


def test_pom_preview_shared_and_single(ais_project, capsys):
    """``pom preview`` draws every processed tomogram; ``-o FEATURE`` the outputs of ``pom single test``."""
    from pom_common.mrcio import read_volume, write_volume
    from pom_training.cli import main

    project = ais_project
    classes = ("Cytoplasm", "Mitochondrion", "Vesicle", "Void", "Unknown")
    rng = np.random.default_rng(1)
    (project / "output").mkdir()
    for folder, stems, names in (("output", ("TS_001", "TS_002"), classes), ("test", ("TS_003",), ("Vesicle",))):
        for stem in stems:
            shape = read_volume(project / ("tomograms" if folder == "output" else "test") / f"{stem}.mrc").data.shape
            for c in names:
                write_volume(project / folder / f"{stem}__{c}.mrc",
                             rng.random(tuple(s // 2 for s in shape)).astype(np.float32), 20.0)
    assert main(["--project", str(project), "preview"]) == 0
    assert capsys.readouterr().out.split() == [str(project / "output" / "previews" / f"TS_00{i}.png") for i in (1, 2)]
    assert main(["--project", str(project), "preview", "-o", "Vesicle"]) == 0
    assert capsys.readouterr().out.split() == [str(project / "test" / "previews" / "TS_003__Vesicle.png")]
    assert main(["--project", str(project), "preview", "-o", "Void"]) == 2  # nothing to draw: a usage error
    assert "run pom single test -o Void first" in capsys.readouterr().err


def test_previews_read_uint8_outputs_as_probabilities(tmp_path):
    """--dtype uint8 outputs (0..127, signed bytes) and older 0..255 ones are read as 0..1 (a single network's p > 0.5)."""
    from pom_common.mrcio import write_volume
    from pom_inference.outputs import make_writer
    from pom_training.evaluation.preview import class_volumes

    p = np.array([0.0, 0.3, 0.6, 1.0], np.float32).reshape(1, 1, 4, 1)
    writer = make_writer("uint8", tmp_path, ("A",), (0,))
    with writer.open("TS", (1, 1, 4), 10.0) as sink:
        sink.write(0, writer.planes(p))
    write_volume(tmp_path / "TS__B.mrc", np.rint(p[..., 0] * 255).astype(np.uint8), 10.0)  # before: mode 6, 0..255
    got = class_volumes(tmp_path, "TS", ("A", "B"))
    for name in ("A", "B"):
        assert np.abs(got[name] - p[..., 0]).max() <= 0.5 / 127 and list(got[name].ravel() > 0.5) == [0, 0, 1, 1]
