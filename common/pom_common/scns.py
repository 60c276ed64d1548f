"""Safe reader for Ais ``.scns`` annotation files.

A ``.scns`` is a dill pickle (protocol 4) of an Ais ``SEFrame``: plain stdlib ``pickle``
would import Ais, dill and PyOpenGL and run ``SEFrame(path)``, and a crafted file could run
anything. This reader uses a restricted ``Unpickler.find_class``: Ais classes (under
``Ais.core``, ``scNodes.core`` or ``core``) become inert stand-ins, numpy array
reconstruction is allowed, and every other global is refused with :class:`ScnsError`.
Nothing is imported and no file is opened while unpickling.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .files import read_regular_file

#: A .scns file larger than this is refused (Ais's masks of a large tomogram stay far below).
MAX_SCNS_BYTES = 8 << 30

Box = tuple[int, int]  # (x, y) = (column, row), unbinned pixels


class ScnsError(InputError):
    """A .scns file cannot be read safely or is not a usable Ais annotation."""


@dataclass(frozen=True)
class Feature:
    """One Ais ``Segmentation``.

    Attributes
    ----------
    title : str
        The feature's name as typed in Ais (matched exactly against ontologies).
    boxes : dict[int, tuple[Box, ...]]
        Per slice z, the box centres (x = column, y = row), in the order they were clicked.
        Key order is Ais's (the annotator's path), not sorted.
    slices : dict[int, np.ndarray | None]
        Per slice z, the (height, width) uint8 0/1 mask, or None when nothing was painted.
    box_size : int | None
        The feature's own box size in Ais (Pom ignores it).
    colour : tuple[float, float, float] | None
        RGB in 0..1.
    index : int
        Position of the feature in the file.
    """

    title: str
    boxes: dict[int, tuple[Box, ...]]
    slices: dict[int, np.ndarray | None]
    box_size: int | None
    colour: tuple[float, float, float] | None
    index: int

    @property
    def n_boxes(self) -> int:
        """How many boxes the feature has, over all slices."""
        return sum(len(b) for b in self.boxes.values())


@dataclass(frozen=True)
class Annotation:
    """The content of one .scns file that this toolkit uses."""

    path: Path  # the .scns file read
    source_path: str  # the .mrc path stored by Ais (annotating machine; may be Windows)
    n_slices: int
    height: int
    width: int
    pixel_size: float | None  # nm, as Ais stores it
    features: tuple[Feature, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_slices, height, width) of the annotated volume."""
        return (self.n_slices, self.height, self.width)


# --------------------------------------------------------------------------------------
# Restricted unpickling

_AIS_PACKAGES = ("Ais.core", "scNodes.core", "core")
_AIS_MODULES = frozenset(f"{p}.{m}" for p in _AIS_PACKAGES for m in ("se_frame", "opengl_classes"))
_OTHER_STUB_GLOBALS = frozenset({("OpenGL.constant", "IntConstant"), ("OpenGL.constant", "Constant")})
_WITH_MAP_MODULES = ("mrcfile", "io", "_io", "gzip", "bz2", "mmap")
_WITH_MAP_GLOBALS = frozenset({("dill._dill", "_create_filehandle"), ("dill._dill", "_get_attr")})


class _Stub:
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
        _STUBS[key] = type(f"Stub_{name}", (_Stub,), {"_pickled_name": f"{module}.{name}"})
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


def _as_array(value: Any) -> Any:
    return value.array if isinstance(value, _ArrayBuilder) else value


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor as used by protocol 0/1 pickles, for Ais stand-ins only.
    if not (isinstance(cls, type) and issubclass(cls, _Stub)) or base is not object:
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


def _flat(exc: BaseException) -> str:
    """An exception's text on one line (bytes from a broken file may hold line breaks)."""
    return " ".join(str(exc).split())[:300]


def _unpickle(path: Path, data: bytes) -> Any:
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
            raise ScnsError(f"{path}: not a valid .scns pickle ({_flat(exc)})") from None
        raise ScnsError(f"{path}: truncated (the pickle ends early); re-save it in Ais") from None
    except RecursionError:
        raise ScnsError(f"{path}: not a valid .scns (nested too deeply)") from None
    except MemoryError:
        raise ScnsError(f"{path}: not a valid .scns (asks for more memory than available)") from None
    except Exception as exc:  # pickle.UnpicklingError, ValueError, TypeError, ... from bad bytes
        raise ScnsError(f"{path}: not a valid .scns pickle ({type(exc).__name__}: {_flat(exc)})") from None


# --------------------------------------------------------------------------------------
# Conversion to plain values


def _int(value: Any, what: str, path: Path, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ScnsError(f"{path}: {what}: expected an integer, found {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ScnsError(f"{path}: {what}: expected an integer >= {minimum}, found {value}")
    return value


def _feature(obj: Any, index: int, height: int, width: int, path: Path) -> Feature:
    if not isinstance(obj, _Stub):
        raise ScnsError(f"{path}: features[{index}]: expected an Ais Segmentation, found {type(obj).__name__}")
    attrs = obj.__dict__
    title = attrs.get("title")
    if not isinstance(title, str):
        raise ScnsError(f"{path}: features[{index}].title: expected a string, found {type(title).__name__}")
    where = f"feature {index} ({title!r})"
    raw_boxes = attrs.get("boxes", {})
    raw_slices = attrs.get("slices", {})
    if not isinstance(raw_boxes, dict) or not isinstance(raw_slices, dict):
        raise ScnsError(f"{path}: {where}: boxes and slices must be dictionaries keyed by slice")
    boxes: dict[int, tuple[Box, ...]] = {}
    for z, items in raw_boxes.items():
        z = _int(z, f"{where} box slice", path)
        if not isinstance(items, (list, tuple)):
            raise ScnsError(f"{path}: {where}: boxes at z={z}: expected a list of [x, y]")
        points = []
        for item in items:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ScnsError(f"{path}: {where}: box at z={z}: expected [x, y], found {item!r:.60}")
            points.append((_int(item[0], f"{where} box x", path), _int(item[1], f"{where} box y", path)))
        boxes[z] = tuple(points)
    slices: dict[int, np.ndarray | None] = {}
    for z, mask in raw_slices.items():
        z = _int(z, f"{where} slice index", path)
        mask = _as_array(mask)
        if mask is None:
            slices[z] = None
            continue
        if not isinstance(mask, np.ndarray) or mask.shape != (height, width) or mask.dtype.kind not in "biuf":
            shape = getattr(mask, "shape", type(mask).__name__)
            raise ScnsError(f"{path}: {where}: mask at z={z}: expected a ({height}, {width}) array, found {shape}")
        slices[z] = mask
    box_size = attrs.get("box_size")
    box_size = int(box_size) if isinstance(box_size, (int, np.integer)) and not isinstance(box_size, bool) else None
    colour = attrs.get("colour")
    try:
        colour = tuple(float(c) for c in colour)[:3] if colour is not None else None
        if colour is not None and len(colour) != 3:
            colour = None
    except (TypeError, ValueError):
        colour = None
    return Feature(title=title, boxes=boxes, slices=slices, box_size=box_size, colour=colour, index=index)


def read_scns(path: str | os.PathLike) -> Annotation:
    """Read an Ais .scns annotation without Ais, dill or OpenGL, and without running code.

    Raises
    ------
    ScnsError
        The file is missing, truncated, not a pickle, saved "with map", carries a global
        that is not part of an Ais annotation, or lacks the frame's attributes. The message
        names the file and, for a refused global, the global.
    """
    path = Path(path)
    try:
        data = read_regular_file(path, MAX_SCNS_BYTES)
    except OSError as exc:
        raise ScnsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ScnsError(f"{path}: empty file")
    if data[:1] != b"\x80":
        raise ScnsError(f"{path}: not a pickle (an Ais .scns starts with a pickle header)")
    frame = _unpickle(path, data)
    try:
        return _to_annotation(path, frame)
    except ScnsError:
        raise
    except Exception as exc:  # any other shape of garbage: still one clear error
        raise ScnsError(f"{path}: not a usable Ais annotation ({type(exc).__name__}: {_flat(exc)})") from None


def _to_annotation(path: Path, frame: Any) -> Annotation:
    if not isinstance(frame, _Stub) or not frame._pickled_name.endswith(".SEFrame"):
        found = frame._pickled_name if isinstance(frame, _Stub) else type(frame).__name__
        raise ScnsError(f"{path}: expected a pickled Ais SEFrame, found {found}")
    attrs = frame.__dict__
    if attrs.get("includes_map") is True or attrs.get("map") is not None:
        raise ScnsError(f"{path}: saved 'with map'; re-save it in Ais without the map")
    for key in ("n_slices", "height", "width", "features"):
        if key not in attrs:
            raise ScnsError(f"{path}: the SEFrame has no {key!r} attribute (not an Ais annotation?)")
    n_slices = _int(attrs["n_slices"], "n_slices", path, minimum=1)
    height = _int(attrs["height"], "height", path, minimum=1)
    width = _int(attrs["width"], "width", path, minimum=1)
    pixel_size = _as_array(attrs.get("pixel_size"))
    try:
        pixel_size = float(pixel_size) if pixel_size is not None else None
    except (TypeError, ValueError):
        pixel_size = None
    source = attrs.get("path")
    if not isinstance(source, str):
        args = frame._args if isinstance(frame._args, tuple) else ()
        source = args[0] if args and isinstance(args[0], str) else ""
    raw_features = attrs["features"]
    if not isinstance(raw_features, (list, tuple)):
        raise ScnsError(f"{path}: features: expected a list, found {type(raw_features).__name__}")
    features = tuple(_feature(f, i, height, width, path) for i, f in enumerate(raw_features))
    return Annotation(path=path, source_path=source, n_slices=n_slices, height=height, width=width,
                      pixel_size=pixel_size, features=features)
