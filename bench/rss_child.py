"""Process one tomogram with pom_inference in this process; print the peak RSS (MiB)."""

import sys

from pom_inference.driver import process
from pom_inference.worker import ProcessOptions


def main(model: str, tomogram: str, output: str) -> None:
    opts = ProcessOptions(model=model, tomograms=(tomogram,), output_dir=output, tta=4)
    result = process(opts, [None], progress=False)
    assert not result.failed, result.failed
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                print(int(line.split()[1]) / 1024)


if __name__ == "__main__":
    main(*sys.argv[1:4])
