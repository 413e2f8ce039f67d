"""Reads PyTorch checkpoints without torch: zip archives (``torch.save`` ≥ 1.6, TorchScript) and
the legacy pre-1.6 ``torch.save`` stream.

Nothing from the file runs: a restricted unpickler accepts only the tensor rebuilders
(``torch._utils._rebuild_tensor``, ``_rebuild_tensor_v2``, ``_rebuild_parameter``), the storage
type names (``torch.FloatStorage`` …), ``collections.OrderedDict`` and, inside TorchScript
archives, ``__torch__.*`` module classes (rebuilt as plain attribute holders) and
``torch.jit._pickle.build_intlist``. Any other global raises :class:`UnsafeCheckpointError`.

Formats (PyTorch ``torch/serialization.py``, read, not run):

* **zip** (PyTorch ≥ 1.6 default; TorchScript ``torch.jit.save``): ``<root>/data.pkl`` pickles the
  object; storages are persistent ids ``('storage', torch.FloatStorage, key, device, numel)``
  whose raw little-endian bytes are the member ``<root>/data/<key>``.
* **legacy** (PyTorch 0.1.10 – 1.5, and ``_use_new_zipfile_serialization=False``): five pickles
  in one stream — magic number ``0x1950a86a20f9469cfc6c``, protocol version ``1001``, a
  ``sys_info`` dict, the object (storages as persistent ids ``('storage', torch.FloatStorage,
  key, location, numel, view_metadata)``), the list of storage keys — then, per key in that
  order, an int64 element count and the storage's raw little-endian bytes. PATN's released
  generators (PyTorch 0.3.1, Zhu et al., CVPR 2019) and DIAF's (PyTorch 0.4) are in this format.
  The pre-0.1.10 tar format is refused.

Tensors become NumPy arrays of the stored dtype and shape (copies, C-contiguous); bfloat16 uses
``ml_dtypes.bfloat16``.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Dict, Union

import ml_dtypes
import numpy as np

from hpt_jax import errors

__all__ = ["read_tensors", "load", "checkpoint_format", "UnsafeCheckpointError", "CheckpointFormatError",
           "LEGACY_MAGIC", "LEGACY_PROTOCOL"]

#: First pickle of a legacy ``torch.save`` stream.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Second pickle of a legacy stream (the only protocol version PyTorch ever wrote).
LEGACY_PROTOCOL = 1001

#: Storage type name → element dtype.
_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}

PathOrBytes = Union[str, os.PathLike, bytes, bytearray]


class UnsafeCheckpointError(errors.UserError, pickle.UnpicklingError):
  """The checkpoint pickles a global outside the allow-list (code would run on a plain ``torch.load``)."""


class CheckpointFormatError(errors.UserError, ValueError):
  """The file is neither a PyTorch zip archive nor a legacy ``torch.save`` stream (or is truncated)."""


class _ScriptObject:
  """Stand-in for a TorchScript module object: BUILD stores its attributes in ``__dict__``."""
  _qualname = ""


class _OrderedDict(collections.OrderedDict):
  """``collections.OrderedDict`` stand-in that accepts BUILD attributes (``_metadata``)."""


class _Storage:
  """A storage's raw bytes as a 1-D NumPy array (filled after the main pickle in legacy streams)."""

  def __init__(self, dtype, array: np.ndarray | None = None):
    self.dtype = np.dtype(dtype)
    self.array = array


class _Pending:
  """A tensor whose storage bytes are read after the pickle (legacy stream); see :func:`_materialise`."""

  def __init__(self, storage: _Storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

  def array(self) -> np.ndarray:
    a = self.storage.array
    if a is None:
      raise CheckpointFormatError("a tensor's storage bytes are missing (truncated checkpoint)")
    if len(self.size) == 0:
      return np.array(a[self.offset])
    if any(s == 0 for s in self.size):
      return np.zeros(self.size, a.dtype)
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= a.size or self.offset < 0:
      raise CheckpointFormatError(f"tensor of size {self.size} at offset {self.offset} runs past its storage "
                                  f"({a.size} elements)")
    out = np.lib.stride_tricks.as_strided(a[self.offset:], shape=self.size,
                                          strides=tuple(s * a.dtype.itemsize for s in self.stride))
    return np.array(out, order="C")  # own the memory, C order


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """``torch._utils._rebuild_tensor`` (PyTorch ≤ 0.3) and ``_rebuild_tensor_v2`` (≥ 0.4)."""
  del unused
  return _Pending(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its data."""
  del requires_grad, backward_hooks, unused
  return data


def _find_class(module: str, name: str, torchscript: bool):
  if torchscript and module.startswith("__torch__."):
    return type(name, (_ScriptObject,), {"_qualname": f"{module}.{name}"})
  if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
    return _rebuild_tensor
  if (module, name) == ("torch._utils", "_rebuild_parameter"):
    return _rebuild_parameter
  if module == "torch" and name in _DTYPES:
    return name
  if (module, name) == ("collections", "OrderedDict"):
    return _OrderedDict
  if torchscript and (module, name) == ("torch.jit._pickle", "build_intlist"):
    return list
  raise UnsafeCheckpointError(f"global {module}.{name} is not allowed (only tensors and plain containers "
                              "are read from a checkpoint)")


def _storage_dtype(kind) -> Any:
  if kind not in _DTYPES:
    raise CheckpointFormatError(f"unsupported storage type {kind!r}")
  return _DTYPES[kind]


def _materialise(obj):
  """Replaces every :class:`_Pending` tensor in a pickled structure by its NumPy array."""
  if isinstance(obj, _Pending):
    return obj.array()
  if isinstance(obj, dict):
    for k in list(obj):
      obj[k] = _materialise(obj[k])
    return obj
  if isinstance(obj, list):
    return [_materialise(v) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_materialise(v) for v in obj)
  if isinstance(obj, _ScriptObject):
    for k, v in vars(obj).items():
      setattr(obj, k, _materialise(v))
  return obj


def _read_bytes(path_or_bytes: PathOrBytes) -> bytes:
  if isinstance(path_or_bytes, (bytes, bytearray)):
    return bytes(path_or_bytes)
  if not os.path.isfile(path_or_bytes):
    raise errors.MissingFileError(f"PyTorch checkpoint {os.fspath(path_or_bytes)!r} not found")
  with open(path_or_bytes, "rb") as f:
    return f.read()


def checkpoint_format(path_or_bytes: PathOrBytes) -> str:
  """``'zip'`` or ``'legacy'`` (see the module docstring), from the file's first bytes.

  Raises:
    CheckpointFormatError: neither (e.g. the pre-0.1.10 tar format, or not a checkpoint).
  """
  return _format(_read_bytes(path_or_bytes), _name(path_or_bytes))


def _format(data: bytes, name: str) -> str:
  if data[:4] == b"PK\x03\x04":
    return "zip"
  if data[:1] == b"\x80":  # a pickle (protocol ≥ 2) — the legacy stream starts with one
    return "legacy"
  raise CheckpointFormatError(f"{name}: not a PyTorch checkpoint (neither a zip archive nor "
                              "a legacy torch.save stream)")


def _name(path_or_bytes) -> str:
  return "checkpoint bytes" if isinstance(path_or_bytes, (bytes, bytearray)) else os.fspath(path_or_bytes)


def _load_zip(data: bytes, name: str):
  with zipfile.ZipFile(io.BytesIO(data)) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pkl:
      raise CheckpointFormatError(f"{name}: no <name>/data.pkl, not a PyTorch zip archive nor a TorchScript archive")
    root = pkl[0][: -len("data.pkl")]

    class Unpickler(pickle.Unpickler):
      def find_class(self, module, cls_name):
        return _find_class(module, cls_name, torchscript=True)

      def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
          raise UnsafeCheckpointError(f"unexpected persistent id {pid!r}")
        _, kind, key, _device, _numel = pid[:5]
        dtype = _storage_dtype(kind)
        return _Storage(dtype, np.frombuffer(z.read(f"{root}data/{key}"), dtype=dtype))

    with z.open(pkl[0]) as f:
      return _materialise(Unpickler(f).load())


def _load_legacy(data: bytes, name: str):
  f = io.BytesIO(data)
  storages: Dict[str, _Storage] = {}

  class Unpickler(pickle.Unpickler):
    def find_class(self, module, cls_name):
      return _find_class(module, cls_name, torchscript=False)

    def persistent_load(self, pid):
      if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
        raise UnsafeCheckpointError(f"unexpected persistent id {pid!r}")
      _, kind, key, _location, _numel, view = pid
      if key not in storages:
        storages[key] = _Storage(_storage_dtype(kind))
      if view is not None:  # (view_key, offset, size): a view into the root storage (PyTorch ≤ 0.3)
        view_key, offset, size = view
        root = storages[key]
        sub = storages.setdefault(view_key, _Storage(root.dtype))
        sub.view_of = (root, int(offset), int(size))
        return sub
      return storages[key]

  def plain_load():
    # The magic number, protocol and sys_info pickles hold only ints and a dict of ints/bools.
    class Plain(pickle.Unpickler):
      def find_class(self, module, cls_name):
        raise UnsafeCheckpointError(f"global {module}.{cls_name} is not allowed in a checkpoint header")
    return Plain(f).load()

  try:
    magic = plain_load()
    if magic != LEGACY_MAGIC:
      raise CheckpointFormatError(f"{name}: a pickle but not a torch.save stream (no magic number; a plain "
                                  "pickle is not read, it could run code)")
    protocol = plain_load()
    if protocol != LEGACY_PROTOCOL:
      raise CheckpointFormatError(f"{name}: legacy protocol {protocol!r}, expected {LEGACY_PROTOCOL}")
    sys_info = plain_load()
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    obj = Unpickler(f).load()
    keys = plain_load()
    for key in keys:
      count = struct.unpack("<q", f.read(8))[0]
      storage = storages.get(key)
      dtype = storage.dtype if storage is not None else np.dtype(np.uint8)
      blob = f.read(count * dtype.itemsize)
      if len(blob) != count * dtype.itemsize:
        raise CheckpointFormatError(f"{name}: truncated (storage {key} needs {count * dtype.itemsize} bytes)")
      if storage is not None:
        array = np.frombuffer(blob, dtype=dtype.newbyteorder("<" if little else ">"))
        storage.array = array.astype(dtype, copy=False)
  except (EOFError, struct.error, pickle.UnpicklingError) as e:
    if isinstance(e, UnsafeCheckpointError):
      raise
    raise CheckpointFormatError(f"{name}: not a readable legacy torch.save stream ({e})") from e
  for storage in storages.values():
    view = getattr(storage, "view_of", None)
    if view is not None and view[0].array is not None:
      root, offset, size = view
      storage.array = root.array[offset:offset + size]
  return _materialise(obj)


def load(path_or_bytes: PathOrBytes) -> Any:
  """The pickled object of a PyTorch checkpoint, tensors as NumPy arrays (no torch, no code run).

  Args:
    path_or_bytes: a ``.pt``/``.pth`` path, or the file's bytes; zip or legacy format.

  Returns:
    The object as saved: typically an ``OrderedDict`` (state dict) of arrays, or nested
    dicts/lists; TorchScript modules become attribute holders.

  Raises:
    hpt_jax.errors.MissingFileError: no such file.
    CheckpointFormatError: not a zip archive nor a legacy stream, or truncated.
    UnsafeCheckpointError: a pickled global outside the allow-list (module docstring).
  """
  data = _read_bytes(path_or_bytes)
  name = _name(path_or_bytes)
  kind = _format(data, name)
  return _load_zip(data, name) if kind == "zip" else _load_legacy(data, name)


def read_tensors(path_or_bytes: PathOrBytes) -> Dict[str, np.ndarray]:
  """Every tensor of a PyTorch checkpoint by dotted name (no torch, no code run).

  A state dict gives its own keys (``model.stream1_down.1.weight``); nested dicts and TorchScript
  module attributes are joined with dots (``net.layers.conv.weight``); a checkpoint that wraps its
  state dict (``{'state_dict': …}``) gives ``state_dict.<key>``. Non-tensor values are skipped.

  Args:
    path_or_bytes: a ``.pt``/``.pth`` path or its bytes, zip or legacy format.

  Returns:
    ``{name: np.ndarray}`` of the stored dtype and shape.

  Raises:
    as :func:`load`.
  """
  out: Dict[str, np.ndarray] = {}

  def walk(o, prefix):
    items = o.items() if isinstance(o, dict) else vars(o).items()
    for k, v in items:
      if isinstance(v, (_ScriptObject, dict)):
        walk(v, f"{prefix}{k}.")
      elif isinstance(v, np.ndarray):
        out[prefix + str(k)] = v

  walk(load(path_or_bytes), "")
  return out
