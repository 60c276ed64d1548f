"""A progress bar over the whole dataset, fed by the claim store: every worker, on every server."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from pom_common.naming import tomogram_stem

from .options import ProcessOptions, open_store

logger = logging.getLogger(__name__)

#: Seconds between updates of the bar (one listing of the state folder each).
PROGRESS_SECONDS = 2.0


class DatasetProgress:
    """Finished tomograms of the run (done or failed) out of all, with throughput and time left (tqdm)."""

    def __init__(self, opts: ProcessOptions) -> None:
        self.opts = opts
        self.stems = [tomogram_stem(Path(t)) for t in opts.tomograms]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pom-progress", daemon=True)

    def __enter__(self) -> DatasetProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        store = open_store(self.opts)
        wanted = set(self.stems)
        bar = None
        try:
            with logging_redirect_tqdm():  # this process's log lines above the bar (workers' own: pom_common.log)
                while True:
                    started = time.monotonic()
                    finished = len(wanted & store.finished_stems())
                    cost = time.monotonic() - started
                    if bar is None:
                        bar = tqdm(total=len(self.stems), initial=finished, unit="tomogram", desc="dataset",
                                   disable=None, dynamic_ncols=True, smoothing=0.1)
                    else:
                        advance(bar, finished)
                    if self.stop.is_set():  # the count after the last tomogram: the bar ends where the run did
                        break
                    # A large folder on a slow filesystem: look less often (at most 10 % of the time).
                    self.stop.wait(max(PROGRESS_SECONDS, 10 * cost))
        except Exception as exc:  # the bar is a convenience: never let it stop a run
            logger.debug("progress bar: %s", exc)
        finally:
            if bar is not None:
                bar.close()


def advance(bar: Any, finished: int) -> None:
    """Move ``bar`` to ``finished``; when fewer are finished than before (tomograms being redone), start again there.

    Never a step backwards: a negative step would make tqdm show a negative rate.
    """
    if finished >= bar.n:
        bar.update(finished - bar.n)
        return
    bar.reset(total=bar.total)  # the clock and the rate start again, from what is finished now
    bar.initial = bar.n = bar.last_print_n = finished
    bar.refresh()
