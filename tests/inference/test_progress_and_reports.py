"""What a run shows and reports (issue 22): the bar ends where the run did, never a negative rate, log lines
above the bar; ``status`` of a finished folder (``info`` for people: test_process.test_info)."""

import io
import logging
import time

import tqdm as tqdm_module

from pom_common.workqueue import FileClaimStore
from pom_inference import progress
from pom_inference.cli import main as infer_main
from pom_inference.worker import ProcessOptions

from ..helpers import make_onnx_model, make_tomograms


def _bar(screen, **kwargs):
    return tqdm_module.tqdm(file=screen, disable=False, mininterval=0, **kwargs)


def test_the_bar_never_steps_back():
    """Fewer finished than before (tomograms being redone): the bar starts again there, its rate never negative."""
    screen = io.StringIO()
    bar = _bar(screen, total=10, initial=8)
    progress.advance(bar, 9)
    assert bar.n == 9
    progress.advance(bar, 2)  # a rerun claimed tomograms that were done
    assert bar.n == bar.initial == 2
    time.sleep(0.01)
    progress.advance(bar, 4)
    rate = bar.format_dict["rate"]
    assert bar.n == 4 and (rate is None or rate > 0)
    assert "-" not in screen.getvalue().split("\r")[-1].split("[")[-1]  # no negative rate shown
    bar.close()


def test_the_bar_ends_at_what_the_run_finished(tmp_path, monkeypatch):
    """Tomograms finished after the bar's last look are counted when the run ends: 100 %, not 96 %."""
    bars = []

    class Recorder(tqdm_module.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.update(file=io.StringIO(), disable=False)
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm_module, "tqdm", Recorder)
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 60.0)  # it looks once at the start, then only at the end
    stems = [f"TS_{i:02d}" for i in range(5)]
    opts = ProcessOptions(model="m.onnx", tomograms=tuple(str(tmp_path / f"{s}.mrc") for s in stems),
                          output_dir=str(tmp_path / "out"))
    with progress.DatasetProgress(opts):
        time.sleep(0.3)
        store = FileClaimStore(tmp_path / "out")
        for stem in stems:
            claim = store.claim(stem)
            store.record_done(claim, {})
            store.release(claim)
        store.close()
    assert bars and bars[0].n == bars[0].total == 5


def test_log_lines_go_above_the_bar(tmp_path, monkeypatch):
    """While the bar is drawn, this process's log lines are written through tqdm (above the bar, not into it)."""
    written = []
    monkeypatch.setattr(tqdm_module.tqdm, "write", classmethod(lambda cls, s, file=None, end="\n", nolock=False:
                                                                written.append(s)))
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.05)
    opts = ProcessOptions(model="m.onnx", tomograms=(str(tmp_path / "TS_00.mrc"),), output_dir=str(tmp_path / "o"))
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        with progress.DatasetProgress(opts):
            time.sleep(0.3)
            logging.getLogger("pom_inference.worker").info("TS_00  done in 1.0 s")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert any("TS_00  done" in line for line in written)


def test_status_of_a_finished_folder_says_all_done(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx")
    make_tomograms(tmp_path / "t", 3)
    assert infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output", str(tmp_path / "o"),
                       "--gpus", "cpu"]) == 0
    capsys.readouterr()
    assert infer_main(["status", "--output", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'o'}: all 3 done"  # no throughput, no "0 s left"
    make_tomograms(tmp_path / "t", 4)  # a fourth one, not started
    assert infer_main(["status", "--output", str(tmp_path / "o"), "--tomograms", str(tmp_path / "t")]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'o'}: 3 done, 0 running, 0 failed, 1 pending")
