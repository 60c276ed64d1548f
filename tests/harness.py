"""Run ``pom-infer`` with faults injected, for the fault-injection tests (a script, not a test module).

    python tests/harness.py process MODEL --tomograms ... (pom-infer's arguments)

Environment variables choose the faults:

``POM_TEST_SLOW``            seconds added to every prediction of a slab (one slice per slab)
``POM_TEST_PAUSE_BEFORE_DONE`` a tomogram: the worker stops itself (SIGSTOP) after its outputs
                             are renamed into place and before it records done
``POM_TEST_PAUSE_BETWEEN_RENAMES`` a tomogram: the worker stops itself after moving the first of
                             its output files into place, before the others
``POM_TEST_PAUSE_IN_DONE``   a tomogram: the worker stops itself after its ownership check for
                             done passed, before it writes the done record
``POM_TEST_PAUSE_IN_REMOVE`` a tomogram: the worker stops itself when, having taken its claim over,
                             it is about to remove the temporaries the stopped owner left
``POM_TEST_HANG``            a tomogram: predicting it never returns
``POM_TEST_SLOW_RELEASE``    seconds added to every claim release (a slow cleanup)
"""

import os
import signal
import sys
import time


def main() -> int:
    import pom_inference.predict as predict_module
    import pom_inference.worker as worker
    from pom_common.workqueue import FileClaimStore
    from pom_inference.cli import main as infer_main

    slow = float(os.environ.get("POM_TEST_SLOW", "0") or 0)
    hang = os.environ.get("POM_TEST_HANG")
    pause = os.environ.get("POM_TEST_PAUSE_BEFORE_DONE")
    slow_release = float(os.environ.get("POM_TEST_SLOW_RELEASE", "0") or 0)
    between = os.environ.get("POM_TEST_PAUSE_BETWEEN_RENAMES")
    in_done = os.environ.get("POM_TEST_PAUSE_IN_DONE")
    in_remove = os.environ.get("POM_TEST_PAUSE_IN_REMOVE")
    current = {"stem": None}
    if slow or hang:
        worker.SLAB = 1
        real_predict = predict_module.SlicePredictor.__call__

        def predict(*args, **kwargs):
            if hang and current["stem"] == hang:
                while True:
                    time.sleep(3600)
            time.sleep(slow)
            return real_predict(*args, **kwargs)

        predict_module.SlicePredictor.__call__ = predict
        real_segment = worker.Worker._segment

        def segment(self, prepared, claim, *args):
            current["stem"] = claim.stem
            return real_segment(self, prepared, claim, *args)

        worker.Worker._segment = segment
    if pause:
        real_done = FileClaimStore.record_done

        def record_done(self, claim, record):
            if claim.stem == pause:
                os.kill(os.getpid(), signal.SIGSTOP)
            return real_done(self, claim, record)

        FileClaimStore.record_done = record_done
    if slow_release:
        real_release = FileClaimStore.release

        def release(self, claim):
            time.sleep(slow_release)
            return real_release(self, claim)

        FileClaimStore.release = release
    if in_remove:
        import pom_inference.outputs as outputs

        real_remove = outputs._MrcWriter.remove_temporaries

        def remove_temporaries(self, stem, **kwargs):
            if stem == in_remove:
                os.kill(os.getpid(), signal.SIGSTOP)
            return real_remove(self, stem, **kwargs)

        outputs._MrcWriter.remove_temporaries = remove_temporaries
    if in_done:
        real_write_new = FileClaimStore._write_new

        def write_new(self, path, doc):
            if path.name.startswith(f"{in_done}.done."):
                os.kill(os.getpid(), signal.SIGSTOP)
            return real_write_new(self, path, doc)

        FileClaimStore._write_new = write_new
    if between:
        import pom_inference.outputs as outputs

        real_no_replace = outputs.no_replace
        paused = []

        def no_replace(before_replace):
            publish = real_no_replace(before_replace)

            def publish_then_pause(tmp, target):
                publish(tmp, target)
                if target.name.startswith(f"{between}__") and not paused:
                    paused.append(target)
                    os.kill(os.getpid(), signal.SIGSTOP)
            return publish_then_pause

        outputs.no_replace = no_replace
    return infer_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
