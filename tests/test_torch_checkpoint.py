"""The torch-free PyTorch checkpoint reader (:mod:`hpt_jax.torch_checkpoint`).

Fixtures were written by torch itself (``tests/data/make_patn_reference.py``): the same tensors
saved in the zip format and in the legacy pre-1.6 format (``_use_new_zipfile_serialization=False``),
with the arrays torch held in ``torch_checkpoint_expected.npz``.
"""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from hpt_jax import errors, torch_checkpoint

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reads_both_formats_exactly(fmt):
  path = os.path.join(DATA, f"torch_checkpoint_{fmt}.pt")
  assert torch_checkpoint.checkpoint_format(path) == fmt
  got = torch_checkpoint.read_tensors(path)
  with np.load(os.path.join(DATA, "torch_checkpoint_expected.npz")) as expected:
    assert sorted(got) == sorted(expected.files)
    for key in expected.files:
      assert got[key].dtype == expected[key].dtype, key
      assert got[key].shape == expected[key].shape, key
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  # Non-contiguous and offset tensors come back as C-ordered copies.
  assert got["transposed"].flags.c_contiguous and got["transposed"].shape == (5, 6)
  np.testing.assert_array_equal(got["view_a"], got["transposed"].T[1:3])
  # Bytes work as well as paths.
  with open(path, "rb") as f:
    assert sorted(torch_checkpoint.read_tensors(f.read())) == sorted(got)


class _Evil:
  def __reduce__(self):
    return (os.system, ("true",))


def _legacy_stream(obj) -> bytes:
  buf = io.BytesIO()
  for part in (torch_checkpoint.LEGACY_MAGIC, torch_checkpoint.LEGACY_PROTOCOL, {"little_endian": True}, obj, []):
    pickle.dump(part, buf, protocol=2)
  return buf.getvalue()


def test_refuses_other_globals_in_both_formats():
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"x": _Evil()}, protocol=2))
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match="posix.system|os.system"):
    torch_checkpoint.read_tensors(buf.getvalue())
  with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
    torch_checkpoint.read_tensors(_legacy_stream({"x": _Evil()}))
  # A plain pickle (no torch.save magic number) is not unpickled at all.
  with pytest.raises(torch_checkpoint.CheckpointFormatError, match="no magic number"):
    torch_checkpoint.read_tensors(pickle.dumps({"x": 1}, protocol=2))


def test_format_errors_are_user_errors(tmp_path):
  with pytest.raises(errors.MissingFileError, match="not found"):
    torch_checkpoint.read_tensors(str(tmp_path / "none.pth"))
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"not a checkpoint")
  with pytest.raises(torch_checkpoint.CheckpointFormatError, match="bad.pth: not a PyTorch checkpoint"):
    torch_checkpoint.read_tensors(str(bad))
  with open(os.path.join(DATA, "torch_checkpoint_legacy.pt"), "rb") as f:
    data = f.read()
  with pytest.raises(torch_checkpoint.CheckpointFormatError, match="truncated"):
    torch_checkpoint.read_tensors(data[:-10])
  assert issubclass(torch_checkpoint.CheckpointFormatError, errors.UserError)
