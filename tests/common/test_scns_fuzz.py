"""Fuzzing the .scns reader: random and mutated pickles give a valid result or ScnsError,
never another exception and never a hang (hypothesis, bounded to seconds)."""

import pickle
import signal

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pom_common.scns import Annotation, ScnsError, read_scns

from ..helpers import AIS_MINI

REAL = (AIS_MINI / "tomograms" / "TS_001.scns").read_bytes()[:40000]  # frame header + first feature
SMALL = pickle.dumps({"n_slices": 3, "features": [np.zeros((2, 2), np.uint8), (1, 2.5, "x")]}, protocol=4)
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


class _Alarm(Exception):
    pass


def _check(path, data: bytes) -> None:
    path.write_bytes(data)

    def alarm(signum, frame):
        raise _Alarm

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(5)
    try:
        result = read_scns(path)
        assert isinstance(result, Annotation)
    except ScnsError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    except _Alarm:
        raise AssertionError("the reader hung on a fuzzed file") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@FUZZ
@given(st.binary(min_size=0, max_size=400))
def test_random_bytes(tmp_path, data):
    _check(tmp_path / "r.scns", b"\x80\x04" + data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(REAL) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(100, len(REAL)))
def test_mutated_real_file(tmp_path, flips, cut):
    data = bytearray(REAL[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    _check(tmp_path / "m.scns", bytes(data))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_small_pickle(tmp_path, flips):
    data = bytearray(SMALL)
    for pos, value in flips:
        data[pos] = value
    _check(tmp_path / "s.scns", bytes(data))


def test_full_real_file_still_reads():
    assert len(read_scns(AIS_MINI / "tomograms" / "TS_001.scns").features) == 4


def test_huge_memo_index_is_refused_at_once(tmp_path):
    """Five bytes (LONG_BINPUT 1258375976) made CPython's unpickler allocate 10 GB."""
    data = bytearray(SMALL)
    data[114] = 114  # REDUCE's memo store becomes LONG_BINPUT with a 32-bit index from the next bytes
    _check(tmp_path / "memo.scns", bytes(data))
