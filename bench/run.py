"""``make bench``: speed and memory of pom-onnx against the way Pom does it, as ratios.

Every figure is a median of several repeats after a warm-up, measured in this one run.
Results are printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- 1. z-filter


def bench_zfilter(shape=(200, 960, 928), z_sum=4, repeats=5) -> dict:
    from scipy.ndimage import convolve1d

    from pom_common.zfilter import zfilter_bin

    volume = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)

    def scipy_way():  # Pom: convolve1d (nearest) then reshape-mean binning
        w = 2 * z_sum + 1
        f = convolve1d(volume, np.ones(w) / w, axis=0, mode="nearest")
        nz, ny, nx = f.shape
        return f[: nz // 2 * 2, : ny // 2 * 2, : nx // 2 * 2].reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).mean(5).mean(3).mean(1)

    ours = timed(lambda: zfilter_bin(volume, z_sum), repeats)
    floor = timed(lambda: volume.sum(), repeats)
    reference = timed(scipy_way, max(2, repeats // 2))
    return {"shape": shape, "ours": ours, "scipy": reference, "floor": floor,
            "speedup_vs_scipy": reference / ours, "ratio_to_floor": ours / floor}


# ----------------------------------------------------------------------------- 2. ORT vs Keras


def _export(model, path: Path, classes, channels, depth):
    from pom_common.config import ProjectConfig
    from pom_training.export.exporter import export_onnx
    from pom_training.export.metadata import model_metadata
    from pom_training.fitting.config import TrainConfig

    config = ProjectConfig(macromolecules=tuple(channels), ontologies=tuple(classes), z_sum=2)
    meta = model_metadata(config, "shared", tuple(classes), TrainConfig(1, 1, 64, depth), 10.0)
    return export_onnx(model, path, meta)


def bench_ort_vs_keras(tmp: Path, size=512, filters=64, depth=4, repeats=5) -> list[dict]:
    from pom_inference.session import load_model
    from pom_training.models.unet import build_unet

    rows = []
    for n_channels in (1, 3):
        model = build_unet(n_channels, 1, filters, depth)
        path = _export(model, tmp / f"ort{n_channels}.onnx", ("A",), [f"c{i}" for i in range(n_channels)], depth)
        ort_model = load_model(path, quiet=True)
        x = np.random.default_rng(1).standard_normal((1, size, size, n_channels), dtype=np.float32)
        t_call = timed(lambda: model(x, training=False), repeats)
        t_predict = timed(lambda: model.predict(x, verbose=0), repeats)
        t_ort = timed(lambda: ort_model.run(x), repeats)
        rows.append({"channels": n_channels, "keras_call": t_call, "keras_predict": t_predict, "ort": t_ort,
                     "speedup_vs_call": t_call / t_ort, "speedup_vs_predict": t_predict / t_ort})
    return rows


# ----------------------------------------------------------------------------- 3. end to end


def bench_end_to_end(tmp: Path, shape=(32, 256, 256), filters=64, depth=4, repeats=3) -> dict:
    import keras

    from pom_common.mrcio import write_volume
    from pom_inference.driver import process
    from pom_inference.worker import ProcessOptions
    from pom_training.models.unet import build_unet

    sys.path.insert(0, str(Path(__file__).parent))
    from pom_way import segment_pom_way

    classes = ("Void", "Cytoplasm", "Mitochondrion", "Unknown")
    tomogram = tmp / "e2e" / "TS_bench.mrc"
    tomogram.parent.mkdir()
    write_volume(tomogram, np.random.default_rng(2).standard_normal(shape, dtype=np.float32), 10.0)
    keras.utils.set_random_seed(0)
    model = build_unet(1, len(classes), filters, depth, activation="softmax")
    onnx_path = _export(model, tmp / "shared.onnx", classes, ["Density"], depth)

    runs = iter(range(1000))

    def ours():  # a fresh output folder each time: the same folder would hold the tomogram as done
        opts = ProcessOptions(model=str(onnx_path), tomograms=(str(tomogram),),
                              output_dir=str(tmp / f"ours{next(runs)}"), tta=4)
        result = process(opts, [None], progress=False)
        assert not result.failed and result.done_here == 1

    out_dir = tmp / "pom"
    out_dir.mkdir()
    outs = [str(out_dir / f"TS_bench__{c}.mrc") for c in classes]
    t_ours = timed(ours, repeats)
    t_pom = timed(lambda: segment_pom_way(model, str(tomogram), outs, z_sum=2, runs=4, apix=10.0), repeats)
    return {"shape": shape, "ours": t_ours, "pom": t_pom, "speedup": t_pom / t_ours}


# ----------------------------------------------------------------------------- 4. peak memory


def bench_memory(tmp: Path, base=(64, 512, 512)) -> dict:
    import json

    from pom_common.mrcio import write_volume
    from pom_training.models.unet import build_unet

    model = build_unet(1, 2, 8, 2, activation="softmax")
    onnx_path = _export(model, tmp / "small.onnx", ("A", "B"), ["Density"], 2)
    peaks = {}
    for label, shape in (("1x", base), ("4x", (base[0] * 4, base[1], base[2]))):
        folder = tmp / f"mem{label}"
        folder.mkdir()
        path = folder / "TS_mem.mrc"
        write_volume(path, np.random.default_rng(3).standard_normal(shape, dtype=np.float32), 10.0)
        out = subprocess.run([sys.executable, str(Path(__file__).parent / "rss_child.py"), str(onnx_path), str(path),
                              str(folder / "out")], capture_output=True, text=True, check=True)
        peaks[label] = json.loads(out.stdout.strip().splitlines()[-1])["VmHWM"]
        peaks[f"{label}_input_mib"] = path.stat().st_size / 2**20
    peaks["ratio"] = peaks["4x"] / peaks["1x"]
    return peaks


# ----------------------------------------------------------------------------- 5. coordination


def _claim_worker(folder: str, n_jobs: int, queue) -> None:
    from pom_common.workqueue import FileClaimStore

    q = FileClaimStore(folder, 60, namespace="bench")
    times = []
    for i in range(n_jobs):
        start = time.perf_counter()
        claim = q.claim(f"job{i:04d}")
        if claim is None:
            continue
        if q.state(claim.stem).done is None:
            q.record_done(claim, {})
        q.release(claim)
        times.append(time.perf_counter() - start)
    q.close()
    queue.put(times)


def bench_claims(tmp: Path, workers=4, jobs=200) -> dict:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_claim_worker, args=(str(tmp / "claims"), jobs, results)) for _ in range(workers)]
    for p in procs:
        p.start()
    times = [t for _ in procs for t in results.get()]
    for p in procs:
        p.join()
    return {"claims": len(times), "median_ms": statistics.median(times) * 1000,
            "p95_ms": sorted(times)[int(len(times) * 0.95)] * 1000}


# ----------------------------------------------------------------------------- 6. scale


def _populate(folder: Path, n: int) -> None:
    """n finished tomograms' state files, written directly (what n claim cycles would leave)."""
    import json

    from pom_common.workqueue import DEFAULT_NAMESPACE, STATE_DIR, bucket_of

    root = folder / STATE_DIR / DEFAULT_NAMESPACE / "tomograms"
    record = json.dumps({"fingerprint": "f" * 16, "outputs": {}})
    for i in range(n):
        stem = f"old{i:06d}"
        bucket = root / bucket_of(stem)
        bucket.mkdir(parents=True, exist_ok=True)
        (bucket / f"{stem}.gen.0").write_text("{}")
        (bucket / f"{stem}.done.0").write_text(record)


def bench_scale(tmp: Path, sizes=(1_000, 10_000, 100_000), cycles=200) -> dict:
    """Bookkeeping per tomogram (look, claim, record done, release) beside n finished ones; status of n."""
    from pom_common.workqueue import FileClaimStore
    from pom_inference.status import dataset_status

    rows = []
    for n in sizes:
        folder = tmp / f"scale{n}"
        _populate(folder, n)
        store = FileClaimStore(folder, 60)
        start = time.perf_counter()
        for i in range(cycles):
            stem = f"new{i:05d}"
            store.state(stem)
            claim = store.claim(stem)
            store.record_done(claim, {"fingerprint": "f" * 16, "outputs": {}})
            store.release(claim)
        per = (time.perf_counter() - start) / cycles
        store.close()
        start = time.perf_counter()
        status = dataset_status(folder)
        rows.append({"n": n, "per_tomogram_ms": per * 1000, "status_s": time.perf_counter() - start,
                     "status_count": len(status.done) + len(status.changed)})
    return {"rows": rows, "flat": rows[-1]["per_tomogram_ms"] / rows[0]["per_tomogram_ms"]}


def bench_idle(tmp: Path) -> dict:
    """Seconds between the last tomogram's done record and the exit of a 2-worker run."""
    from pom_common.mrcio import write_volume
    from pom_common.workqueue import FileClaimStore
    from pom_training.models.unet import build_unet

    model = build_unet(1, 2, 4, 2, activation="softmax")
    onnx_path = _export(model, tmp / "idle.onnx", ("A", "B"), ["Density"], 2)
    folder = tmp / "idle"
    folder.mkdir()
    for i in range(12):
        write_volume(folder / f"TS_{i:02d}.mrc", np.random.default_rng(i).standard_normal((16, 64, 64), dtype=np.float32), 10.0)
    out = tmp / "idle_out"
    subprocess.run([sys.executable, "-m", "pom_inference.cli", "process", str(onnx_path), "--tomograms", str(folder),
                    "--output", str(out), "--gpus", "cpu", "--workers", "2"], check=True, capture_output=True)
    exited = time.time()
    last_done = max(e["time"] for e in FileClaimStore(out).journal() if e["event"] == "done")
    return {"idle_s": exited - last_done}


# ----------------------------------------------------------------------------- 8. CPU side per GiB


def copy_network(path: Path, classes: int = 8, z_sum: int = 4) -> Path:
    """A network that only copies its input into every class channel, with the default preprocessing."""
    import onnx
    from onnx import TensorProto, helper

    from pom_common.modelmeta import ModelInfo

    graph = helper.make_graph([helper.make_node("Concat", ["input"] * classes, ["output"], axis=-1)], "copy",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "H", "W", 1])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "H", "W", classes])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = ModelInfo(kind="shared", classes=tuple(f"C{i}" for i in range(classes)), channels=("Density",),
                     z_sum=z_sum, normalisation={"Density": "local"}, normalisation_window=32, size_multiple=16,
                     voxel_size=10.0, version="bench")
    model.metadata_props.add(key="pom", value=info.to_json())
    onnx.save(model, str(path))
    return path


def ram_folder(tmp: Path) -> Path:
    """Where outputs go when the disk's speed is not what is measured: tmpfs (/dev/shm) if there is one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="pom-bench-", dir=shm))
    return tmp


def bench_cpu_side(tmp: Path, shape=(200, 960, 928), repeats=3) -> dict:
    """Seconds per GiB of input outside the network (copy network, 8 classes), TTA 1 and 4."""
    import shutil

    from pom_common.mrcio import write_volume
    from pom_inference.driver import process
    from pom_inference.worker import ProcessOptions

    model = copy_network(tmp / "copy.onnx")
    folder = tmp / "cpu_side"
    folder.mkdir()
    first = folder / "TS_c0.mrc"
    write_volume(first, np.random.default_rng(4).standard_normal(shape, dtype=np.float32), 10.0)
    for i in (1, 2):
        os.link(first, folder / f"TS_c{i}.mrc")
    gib = first.stat().st_size / 2**30
    out_root = ram_folder(tmp)
    runs = iter(range(10_000))

    def run(tomograms, tta, graph=False):
        out = out_root / f"o{next(runs)}"
        opts = ProcessOptions(model=str(model), tomograms=tuple(str(t) for t in tomograms), output_dir=str(out),
                              tta=tta, tta_graph=graph)
        start = time.perf_counter()
        result = process(opts, [None], progress=False)
        wall = time.perf_counter() - start
        assert not result.failed and result.done_here == len(tomograms), result.failed
        shutil.rmtree(out)
        network = sum(w.network_seconds for w in result.workers)
        return wall, network

    rows = {}
    try:
        run([first], 1)  # warm-up: numba's cache, the page cache
        for tta in (1, 4):
            for label, tomograms in (("1 tomogram", [first]), ("3 tomograms", sorted(folder.glob("*.mrc")))):
                samples = [run(tomograms, tta) for _ in range(repeats)]
                per = statistics.median((w - n) / (gib * len(tomograms)) for w, n in samples)
                rows[(tta, label)] = {"outside_s_per_gib": per, "wall": statistics.median(w for w, _ in samples),
                                      "network": statistics.median(n for _, n in samples)}
        graph = [run([first], 4, graph=True) for _ in range(repeats)]
        kernels = [run([first], 4) for _ in range(repeats)]
        rows["graph"] = {"wall_graph": statistics.median(w for w, _ in graph),
                         "wall_kernels": statistics.median(w for w, _ in kernels)}
    finally:
        if out_root != tmp:
            shutil.rmtree(out_root, ignore_errors=True)
    return {"shape": shape, "gib": gib, "rows": rows, "outputs_on": "tmpfs" if out_root != tmp else "disk"}


# ----------------------------------------------------------------------------- 9. memory at any size


def sparse_tomogram(path: Path, shape=(600, 2048, 2048)) -> Path:
    """A float32 MRC file of ``shape`` whose data are a hole (zeros, no disk space)."""
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros((1, 1, 1), np.float32))
        mrc.voxel_size = 10.0
        mrc.header.nx, mrc.header.ny, mrc.header.nz = shape[2], shape[1], shape[0]
        mrc.header.mx, mrc.header.my, mrc.header.mz = shape[2], shape[1], shape[0]
        mrc.header.cella = (shape[2] * 10.0, shape[1] * 10.0, shape[0] * 10.0)
    os.truncate(path, 1024 + 4 * shape[0] * shape[1] * shape[2])
    return path


NETWORK_PEAK = """
import sys, threading, time, numpy as np
from pom_inference.session import load_model
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024
model = load_model(sys.argv[1], quiet=True)
b, h, w = map(int, sys.argv[2:5])
x = np.zeros((b, h, w, 1), np.float32)
out = np.empty((b, h, w, len(model.info.classes)), np.float32)
base, peak, stop = anon(), [0.0], threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], anon()); time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
for _ in range(3):
    model.run_into(x, out)
stop.set()
print(peak[0] - base)
"""


def bench_memory_big(tmp: Path, shape=(600, 2048, 2048)) -> dict:
    """Peak memory of processing a sparse 600x2048x2048 float32 tomogram (TTA 1) against the README's bound."""
    import json

    from pom_inference.session import CPU_BATCH_PIXELS

    sys.path.insert(0, str(ROOT))
    from tests.helpers import make_onnx_model

    folder = tmp / "big"
    folder.mkdir()
    tomogram = sparse_tomogram(folder / "TS_huge.mrc", shape)
    model = make_onnx_model(folder / "m.onnx", classes=("A", "B"), kind="shared", multiple=16, z_sum=4)
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "rss_child.py"), str(model), str(tomogram),
                          str(folder / "out"), "1"], capture_output=True, text=True, check=True)
    peak = json.loads(out.stdout.strip().splitlines()[-1])
    ny, nx = shape[1] // 2, shape[2] // 2
    batch = max(1, min(8, CPU_BATCH_PIXELS // (ny * nx)))
    network = float(subprocess.run([sys.executable, "-c", NETWORK_PEAK, str(model), str(batch), str(ny), str(nx)],
                                   capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    p = (shape[0] // 2) * ny * nx * 4 / 2**20  # MiB, one channel
    planes = 8 * 2 * batch * ny * nx / 2**20
    bound = 1024 + p + planes + network
    return {"shape": shape, "input_gib": tomogram.stat().st_size / 2**30, "P_mib": p, "planes_mib": planes,
            "network_mib": network, "bound_mib": bound, **peak}


# ----------------------------------------------------------------------------- 10. reduced precision


def bench_precision(tmp: Path, shape=(200, 960, 928), filters=64, depth=4) -> dict:
    """End to end, one run each: fp32 and int8 (OpenVINO if installed), the default network, TTA 4."""
    import keras

    from pom_common.mrcio import write_volume
    from pom_inference import precision
    from pom_inference.driver import process
    from pom_inference.worker import ProcessOptions
    from pom_training.models.unet import build_unet

    classes = ("Void", "Cytoplasm", "Mitochondrion", "Unknown")
    folder = tmp / "precision"
    folder.mkdir()
    tomogram = folder / "TS_p.mrc"
    write_volume(tomogram, np.random.default_rng(5).standard_normal(shape, dtype=np.float32), 10.0)
    keras.utils.set_random_seed(0)
    onnx_path = _export(build_unet(1, len(classes), filters, depth, activation="softmax"), tmp / "default.onnx",
                        classes, ["Density"], depth)
    # Random weights: int8 moves their probabilities far more than a trained network's, so the
    # gate is opened here for the timing; Dice of trained networks is section 11.
    saved = dict(precision.GATES)
    precision.GATES["int8"] = precision.Gate(min_argmax=0.0)
    times = {}
    try:
        for name in ("int8", "fp32"):
            opts = ProcessOptions(model=str(onnx_path), tomograms=(str(tomogram),), output_dir=str(tmp / f"p_{name}"),
                                  tta=4, precision=name)
            start = time.perf_counter()
            result = process(opts, [None], progress=False)
            times[name] = time.perf_counter() - start
            assert not result.failed and result.done_here == 1
    finally:
        precision.GATES.clear()
        precision.GATES.update(saved)
    runtime = "OpenVINO" if precision.openvino_available() else "ONNX Runtime"
    return {"shape": shape, "fp32": times["fp32"], "int8": times["int8"], "speedup": times["fp32"] / times["int8"],
            "runtime": runtime}


# ----------------------------------------------------------------------------- 12. export memory


def bench_export(tmp: Path, filters=64, depth=4) -> dict:
    """Peak memory of exporting a default-size network: ``pom export -o F`` under /usr/bin/time -v, and in training."""
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "export_memory.py"), str(tmp / "export"),
                          str(filters), str(depth)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def _sections(text: str) -> set[int]:
    """``8-11`` or ``1,3,8-9`` -> the section numbers."""
    numbers: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            numbers.update(range(int(first), int(last or first) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected section numbers such as 8-11 or 1,3") from None
    return numbers


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--sections", type=_sections, default=set(range(1, 13)),
                        help="which sections to run, e.g. 8-12 or 1,3 (default: all); the report holds only those")
    args = parser.parse_args(argv)
    want = args.sections.__contains__
    lines = [f"# Benchmarks\n\nMachine: {machine()}  \nDate: {time.strftime('%Y-%m-%d %H:%M')}  \n"
             "Medians of repeats after a warm-up; every ratio from this one run.\n"]

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        load = os.getloadavg()
        if want(1):
            z = bench_zfilter(shape=(40, 240, 232) if args.quick else (200, 960, 928), repeats=3 if args.quick else 5)
            say("## 1. zfilter_bin (z_sum 4, bin 2), float32 " + "x".join(map(str, z["shape"])))
            say("| ours | scipy (Pom) | read floor (sum) | vs scipy | vs floor |\n|---|---|---|---|---|")
            say(f"| {z['ours']:.3f} s | {z['scipy']:.3f} s | {z['floor']:.3f} s | {z['speedup_vs_scipy']:.1f}x faster "
                f"(target >= 20x: {verdict(z['speedup_vs_scipy'] >= 20)}) | {z['ratio_to_floor']:.2f}x the floor "
                f"(target <= 1.5x: {verdict(z['ratio_to_floor'] <= 1.5)}) |")
            say()
        if want(2):
            size = 128 if args.quick else 512
            rows = bench_ort_vs_keras(tmp, size=size, repeats=2 if args.quick else 5)
            say(f"## 2. ONNX Runtime vs Keras, U-Net 64 filters depth 4, one {size}x{size} image")
            say("| channels | Keras model() | Keras predict | ONNX Runtime | vs model() | vs predict |\n|---|---|---|---|---|---|")
            for r in rows:
                say(f"| {r['channels']} | {r['keras_call']:.3f} s | {r['keras_predict']:.3f} s | {r['ort']:.3f} s | "
                    f"{r['speedup_vs_call']:.2f}x (target >= 1.4x: {verdict(r['speedup_vs_call'] >= 1.4)}) | "
                    f"{r['speedup_vs_predict']:.2f}x |")
            say()
        if want(3):
            e = bench_end_to_end(tmp, shape=(16, 128, 128) if args.quick else (32, 256, 256),
                                 repeats=1 if args.quick else 3)
            say("## 3. One tomogram end to end (read, preprocess, 4-run TTA, write 4 classes), "
                + "x".join(map(str, e["shape"])) + ", U-Net 64/4")
            say(f"| ours | Pom's way | speed-up |\n|---|---|---|\n| {e['ours']:.2f} s | {e['pom']:.2f} s | "
                f"{e['speedup']:.2f}x (target >= 2x: {verdict(e['speedup'] >= 2)}) |")
            say()
        if want(4):
            m = bench_memory(tmp, base=(16, 128, 128) if args.quick else (64, 512, 512))
            say("## 4. Peak resident memory of processing one tomogram (VmHWM)")
            say(f"| 1x ({m['1x_input_mib']:.0f} MiB input) | 4x ({m['4x_input_mib']:.0f} MiB input) | ratio |\n|---|---|---|\n"
                f"| {m['1x']:.0f} MiB | {m['4x']:.0f} MiB | {m['ratio']:.2f}x (target <= 1.5x: {verdict(m['ratio'] <= 1.5)}) |")
            say()
        if want(5):
            c = bench_claims(tmp)
            say("## 5. Coordination: claim + mark done + release, 4 workers, 200 empty jobs")
            say(f"| cycles | median | p95 |\n|---|---|---|\n| {c['claims']} | {c['median_ms']:.2f} ms | {c['p95_ms']:.2f} ms "
                f"(target <= 20 ms: {verdict(c['median_ms'] <= 20)}) |")
            say()
        if want(6):
            s = bench_scale(tmp, sizes=(1_000, 10_000) if args.quick else (1_000, 10_000, 100_000))
            say("## 6. Work queue at scale: bookkeeping per tomogram beside n finished ones, and `status` of n")
            say("| finished tomograms | bookkeeping per tomogram (look, claim, done, release) | status |\n|---|---|---|")
            for r in s["rows"]:
                target = f" (target <= 5 s: {verdict(r['status_s'] <= 5)})" if r["n"] >= 100_000 else ""
                say(f"| {r['n']:,} | {r['per_tomogram_ms']:.2f} ms | {r['status_s']:.2f} s{target} |")
            say(f"\nLargest / smallest: {s['flat']:.2f}x (flat: target <= 1.5x: {verdict(s['flat'] <= 1.5)})")
            say()
        if want(7):
            i = bench_idle(tmp)
            say("## 7. Idle time at the end of a run (2 workers, 12 tomograms): last done record -> exit")
            say(f"| {i['idle_s']:.2f} s (target <= 1 s: {verdict(i['idle_s'] <= 1)}) |\n|---|")
            say()
        if want(8):
            cpu = bench_cpu_side(tmp, shape=(40, 240, 232) if args.quick else (200, 960, 928),
                                 repeats=1 if args.quick else 3)
            say("## 8. The CPU side: seconds per GiB of input outside the network, " + "x".join(map(str, cpu["shape"]))
                + f" float32 ({cpu['gib']:.2f} GiB), a network that copies its input into 8 classes, outputs on "
                + cpu["outputs_on"])
            say("Outside the network = wall time of `process` minus the time ONNX Runtime ran the network; "
                "3 tomograms: the next one is prepared while one is segmented.\n")
            say("| TTA | tomograms per run | outside the network | wall | network |\n|---|---|---|---|---|")
            for (tta, label), r in ((k, v) for k, v in cpu["rows"].items() if k != "graph"):
                say(f"| {tta} | {label} | {r['outside_s_per_gib']:.2f} s/GiB (target <= 1.0: "
                    f"{verdict(r['outside_s_per_gib'] <= 1.0)}) | {r['wall']:.2f} s | {r['network']:.2f} s |")
            g = cpu["rows"]["graph"]
            say(f"\nTTA in the ONNX wrapper graph on the CPU provider: {g['wall_graph']:.2f} s per tomogram (TTA 4) "
                f"against {g['wall_kernels']:.2f} s with the numba kernels (the graph takes {g['wall_graph'] / g['wall_kernels']:.2f}x as long); "
                "the CPU uses the kernels, GPUs the graph.")
            say()
        if want(9):
            big = bench_memory_big(tmp, shape=(60, 512, 512) if args.quick else (600, 2048, 2048))
            say("## 9. Peak memory at any size: a sparse " + "x".join(map(str, big["shape"]))
                + f" float32 tomogram ({big['input_gib']:.1f} GiB), TTA 1, 2 classes")
            say("Bound (README): 1 GiB + P + 8 Kc B + W, with P the preprocessed input, 8 Kc B the class planes of one "
                "call, W the network's working memory for one call (measured alone).\n")
            say("| peak resident (VmHWM) | peak anonymous | peak file-backed | P | 8 Kc B | W | bound |\n|---|---|---|---|---|---|---|")
            say(f"| {big['VmHWM']:.0f} MiB (within the bound: {verdict(big['VmHWM'] <= big['bound_mib'])}) | "
                f"{big['RssAnon']:.0f} MiB | {big['RssFile']:.0f} MiB | {big['P_mib']:.0f} MiB | {big['planes_mib']:.0f} MiB | "
                f"{big['network_mib']:.0f} MiB | {big['bound_mib']:.0f} MiB |")
            say()
        if want(10) and not args.quick:
            pr = bench_precision(tmp)
            say("## 10. Reduced precision on the CPU: one tomogram end to end, " + "x".join(map(str, pr["shape"]))
                + ", U-Net 64/4 (random weights), TTA 4, one run each")
            say(f"| fp32 | int8 ({pr['runtime']}, calibrated on the tomogram) | speed-up |\n|---|---|---|\n"
                f"| {pr['fp32']:.0f} s | {pr['int8']:.0f} s | {pr['speedup']:.2f}x (target >= 3x: "
                f"{verdict(pr['speedup'] >= 3)}) |")
            say()
        if want(11) and not args.quick:
            sys.path.insert(0, str(Path(__file__).parent))
            from precision_quality import dice_by_precision

            q = dice_by_precision(ROOT / "quality")
            net = q["network"]
            say(f"## 11. Dice by precision: the `make quality` {q['project']} project, method {q['method']} seed {q['seed']} "
                f"(U-Net {net.get('base_filters')}/{net.get('depth')}), held-out {', '.join(q['tomograms'])}")
            base = q["rows"]["fp32"]["dice"]
            say("| precision | mean Dice | vs fp32 | agreement with fp32 (middle slab of the first) | gate |\n|---|---|---|---|---|")
            for name, r in q["rows"].items():
                delta = r["dice"] - base
                say(f"| {name} | {r['dice']:.4f} | {delta:+.4f} (target within 0.01: {verdict(abs(delta) <= 0.01)}) | "
                    f"{r['agreement']} | {r['gate']} |")
            say()
        if want(12):
            x = bench_export(tmp, filters=8 if args.quick else 64, depth=2 if args.quick else 4)
            size = "8 filters depth 2" if args.quick else "64 filters depth 4"
            say(f"## 12. Export memory, U-Net {size} ({x['weights_mib']:.0f} MiB of weights), CPU")
            say("| `pom export -o F` peak (`/usr/bin/time -v`) | its wall time | training's export step: peak over the "
                "training process | its time | `.keras` | `.onnx` |\n|---|---|---|---|---|---|")
            added = x["training_export_peak_mib"] - x["training_rss_mib"]
            say(f"| {x['peak_mib']:.0f} MiB | {x['wall_s']:.1f} s | +{added:.0f} MiB = {added / x['weights_mib']:.1f}x the "
                f"weights (target <= 2x + a batch: {verdict(added <= 2.2 * x['weights_mib'])}) | "
                f"{x['training_export_s']:.1f} s | {x['keras_mib']:.0f} MiB | {x['onnx_mib']:.0f} MiB |")
            say("\n`pom export` includes TensorFlow's own start (about 0.56 GiB resident, 5-10 s); before issue 22 "
                "(tf2onnx) the same export peaked at 11,338 MiB and took 46.6 s.")
            say()
        say(f"Load average when this run started: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
            "(2 cores shared with other jobs; figures are noisy, ratios within one run).")
        say()
        say("GPU: no accelerator was lent to the session that ran this (device status: not drawn); the GPU "
            "figures of issue 23 (seconds per tomogram, GiB/s, network-busy share, peak GPU memory, Dice fp16 "
            "vs fp32) are not measured here. The wrapper graph, fp16 and the parity gate are tested on the CPU provider.")
    if not args.quick:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("\n".join(lines) + "\n")
        print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
