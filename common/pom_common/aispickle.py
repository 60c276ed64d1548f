"""Restricted unpickling of Ais ``.scns`` pickles: nothing imported, nothing run.

:func:`unpickle` loads a pickle through a restricted ``Unpickler.find_class``: Ais classes
(under ``Ais.core``, ``scNodes.core`` or ``core``) become inert :class:`Stub` objects,
numpy arrays are rebuilt from raw bytes with plain numeric dtypes only, and every other
global is refused with :class:`ScnsError` naming the file and the global. Used by
:mod:`pom_common.scns`, which turns the stubs into plain values.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


class ScnsError(InputError):
    """A .scns file cannot be read safely or is not a usable Ais annotation."""


_AIS_PACKAGES = ("Ais.core", "scNodes.core", "core")
_AIS_MODULES = frozenset(f"{p}.{m}" for p in _AIS_PACKAGES for m in ("se_frame", "opengl_classes"))
_OTHER_STUB_GLOBALS = frozenset({("OpenGL.constant", "IntConstant"), ("OpenGL.constant", "Constant")})
_WITH_MAP_MODULES = ("mrcfile", "io", "_io", "gzip", "bz2", "mmap")
_WITH_MAP_GLOBALS = frozenset({("dill._dill", "_create_filehandle"), ("dill._dill", "_get_attr")})


class Stub:
    """Inert stand-in for an Ais object: keeps its attributes, does nothing else."""

    _pickled_name = "?"
    _args: tuple = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_args", args)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            if isinstance(slots, dict):
                self.__dict__.update({str(k): v for k, v in slots.items()})
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})

    def __reduce__(self) -> Any:  # never re-pickled
        raise TypeError("stand-in objects cannot be pickled")


_STUBS: dict[tuple[str, str], type] = {}


def _stub_for(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STUBS:
        _STUBS[key] = type(f"Stub_{name}", (Stub,), {"_pickled_name": f"{module}.{name}"})
    return _STUBS[key]


class _DtypeSpec:
    """Stand-in for a pickled ``numpy.dtype``: only plain numeric dtypes are ever built.

    numpy's own ``dtype.__setstate__`` trusts its input (flags, fields), so it is never called.
    """

    def __init__(self, spec: Any = "u1", align: Any = False, copy: Any = False) -> None:
        self.spec, self.byteorder = spec, "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]
        if isinstance(state, tuple) and len(state) > 4 and any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("structured or sub-array dtypes are not allowed")

    def resolve(self) -> np.dtype:
        return _plain_dtype(self.spec, self.byteorder)


def _plain_dtype(spec: Any, byteorder: str = "=") -> np.dtype:
    if isinstance(spec, _DtypeSpec):
        return spec.resolve()
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if isinstance(spec, type) and issubclass(spec, np.generic):
        spec = np.dtype(spec).str
    if not isinstance(spec, str) or len(spec) > 8:
        raise pickle.UnpicklingError("unexpected dtype")
    dtype = np.dtype(spec)
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"dtype {dtype} is not allowed")
    if byteorder == "<":
        dtype = dtype.newbyteorder("<")
    elif byteorder == ">":
        dtype = dtype.newbyteorder(">")
    return dtype


class _ArrayClass:
    """What ``numpy.ndarray``/``numpy.memmap`` resolve to: a marker, never instantiated."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("direct array construction is not allowed")


#: Largest array a .scns may hold (a 4096 x 4096 mask is 16 MiB).
_MAX_ARRAY_BYTES = 1 << 30


class _ArrayBuilder:
    """Collects numpy's pickled array state and builds a fresh, plain, owned array from bytes."""

    array: np.ndarray | None = None

    def __init__(self, shape: Any = None, dtype: Any = None) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("unexpected array state")
        _version, shape, dtype, fortran, raw = state
        dtype = _plain_dtype(dtype)
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and 0 <= n < 1 << 31 for n in shape):
            raise pickle.UnpicklingError("unexpected array shape")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not isinstance(raw, (bytes, bytearray)) or count * dtype.itemsize != len(raw) or len(raw) > _MAX_ARRAY_BYTES:
            raise pickle.UnpicklingError("array data does not match its shape")
        self.array = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ArrayBuilder:
    # numpy's ndarray reduce: _reconstruct(cls, (0,), b'b') then BUILD with the state.
    if subtype is not _ArrayClass:
        raise pickle.UnpicklingError("unexpected array class")
    return _ArrayBuilder()


def _scalar(dtype: Any, data: Any = b"") -> Any:
    dtype = _plain_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("scalar data does not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0]


def _create_array(f: Any, args: Any, state: Any, npdict: Any = None) -> np.ndarray:
    # dill's array constructor, restricted to numpy's own reconstruction.
    if f is not _reconstruct or not isinstance(args, tuple):
        raise pickle.UnpicklingError("unexpected array constructor")
    builder = _reconstruct(*args)
    builder.__setstate__(state)
    return builder.array


def as_array(value: Any) -> Any:
    """An array under construction as its array; anything else as it is."""
    return value.array if isinstance(value, _ArrayBuilder) else value


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor as used by protocol 0/1 pickles, for Ais stand-ins only.
    if not (isinstance(cls, type) and issubclass(cls, Stub)) or base is not object:
        raise pickle.UnpicklingError("copyreg._reconstructor is allowed for Ais classes only")
    return object.__new__(cls)


def _latin1_encode(obj: Any, encoding: str = "utf-8") -> bytes:
    # How protocol 2 pickles store bytes: _codecs.encode(text, 'latin1'); nothing else.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin1 bytes only")
    return obj.encode("latin1")


def _numpy_type(name: str) -> Any:
    value = getattr(np, name, None)
    if isinstance(value, type) and issubclass(value, np.generic) and value is not np.object_:
        return value
    return None


class _Refused(Exception):
    def __init__(self, module: str, name: str, with_map: bool) -> None:
        super().__init__(f"{module}.{name}")
        self.global_name = f"{module}.{name}"
        self.with_map = with_map


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _AIS_MODULES or (module, name) in _OTHER_STUB_GLOBALS:
            return _stub_for(module, name)
        if (module, name) == ("dill._dill", "_create_array"):
            return _create_array
        if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            if name == "_reconstruct":
                return _reconstruct
            if name == "scalar":
                return _scalar
        if module == "numpy":
            if name in ("ndarray", "memmap"):
                return _ArrayClass
            if name == "dtype":
                return _DtypeSpec
            numpy_type = _numpy_type(name)
            if numpy_type is not None:
                return numpy_type
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstructor
        if (module, name) in (("builtins", "object"), ("__builtin__", "object")):
            return object
        if (module, name) in (("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex")):
            return {"set": set, "frozenset": frozenset, "complex": complex}[name]
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        with_map = (module, name) in _WITH_MAP_GLOBALS or module.split(".")[0] in _WITH_MAP_MODULES
        raise _Refused(module, name, with_map)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


#: Opcodes that store into the unpickler's memo at an explicit index.
_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")


def _check_memo_indices(path: Path, data: bytes) -> None:
    """Refuse a pickle that stores into the memo at an index no real pickle reaches.

    CPython's C unpickler keeps the memo as an array sized by the largest index: a single
    ``LONG_BINPUT 1258375976`` (five bytes) makes it allocate and clear 10 GB. Real pickles
    number memo entries from 0 upwards, one per stored object, so an index can never exceed
    the number of opcodes before it. Parsing stops quietly at the first malformed opcode:
    the unpickler fails there too, before reaching anything later.
    """
    import pickletools

    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(data)):
            if opcode.name in _MEMO_PUTS and isinstance(arg, int) and arg > count:
                raise ScnsError(f"{path}: not a valid .scns pickle (memo index {arg} at opcode {count})")
    except ScnsError:
        raise
    except Exception:
        return


def flat(exc: BaseException) -> str:
    """An exception's text on one line (bytes from a broken file may hold line breaks)."""
    return " ".join(str(exc).split())[:300]


def unpickle(path: Path, data: bytes) -> Any:
    """The object pickled in ``data`` (read from ``path``), Ais classes as :class:`Stub`.

    Raises
    ------
    ScnsError
        A refused global, a file saved 'with map', or bytes that are not a valid pickle.
    """
    _check_memo_indices(path, data)
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        if exc.with_map:
            raise ScnsError(
                f"{path}: saved 'with map' (it embeds {exc.global_name}, the volume and open file handles); "
                "re-save it in Ais without the map"
            ) from None
        raise ScnsError(
            f"{path}: refused to load global {exc.global_name!r}: not part of an Ais annotation "
            "(the file may have been crafted to run code; nothing was run)"
        ) from None
    except (EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, pickle.UnpicklingError) and "truncated" not in str(exc):
            raise ScnsError(f"{path}: not a valid .scns pickle ({flat(exc)})") from None
        raise ScnsError(f"{path}: truncated (the pickle ends early); re-save it in Ais") from None
    except RecursionError:
        raise ScnsError(f"{path}: not a valid .scns (nested too deeply)") from None
    except MemoryError:
        raise ScnsError(f"{path}: not a valid .scns (asks for more memory than available)") from None
    except Exception as exc:  # pickle.UnpicklingError, ValueError, TypeError, ... from bad bytes
        raise ScnsError(f"{path}: not a valid .scns pickle ({type(exc).__name__}: {flat(exc)})") from None
