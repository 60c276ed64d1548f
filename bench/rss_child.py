"""Process one tomogram with pom_inference in this process; print its peak memory (MiB) as JSON.

``VmHWM`` is the kernel's peak resident set (anonymous memory and mapped file pages);
the peak of ``RssAnon`` (anonymous memory only: arrays, the network) is sampled every 20 ms.
"""

import json
import sys
import threading
import time

from pom_inference.driver import process
from pom_inference.worker import ProcessOptions


def status() -> dict:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def main(model: str, tomogram: str, output: str, tta: str = "4") -> None:
    peak = {"RssAnon": 0.0, "RssFile": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = status()
            for key in peak:
                peak[key] = max(peak[key], now.get(key, 0.0))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    opts = ProcessOptions(model=model, tomograms=(tomogram,), output_dir=output, tta=int(tta))
    result = process(opts, [None], progress=False)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    assert not result.failed, result.failed
    print(json.dumps({"VmHWM": status()["VmHWM"], "RssAnon": peak["RssAnon"], "RssFile": peak["RssFile"],
                      "seconds": seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
