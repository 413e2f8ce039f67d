r"""Writes a data set's face cache for DRN's face module (dlib boxes, 68 landmarks, frontal flags).

Usage::

  python launch/prepare_faces.py --images=DIR --annotations=CSV [--output=FILE]
  python launch/prepare_faces.py --images=fashion_data/test --annotations=fashion-annotation-test.csv \
      --keypoint_x_offset=-40 --stored_size=256,176        # the full release's 256×256 test images

Reads every image named in the annotation CSV in its stored frame (the 176-wide crop of a wider
file with ``--keypoint_x_offset``), detects the largest face with dlib's HOG detector, its 68
landmarks and whether it is frontal, and falls back to a box around the annotated nose, eyes and
ears (:mod:`hpt_jax.input_pipeline.faces`). Writes ``--output`` (default ``faces.npz`` next to the
CSV, where training and evaluation look by default) and prints the counts. Done once per data set;
the bundled DeepFashion sample's cache is vendored (``hpt_jax/data/deepfashion_sample/faces.npz``).

Needs the ``faces`` extra (``pip install 'hpt-jax[faces]'``). The 68-point model is trained on
iBUG 300-W (non-commercial research only), as are DeepFashion's images: so is the cache.

Flags:
  --images             folder of the images.
  --annotations        PATN annotation CSV (name:keypoints_y:keypoints_x) naming the images.
  --output             the cache file (default: faces.npz next to --annotations).
  --stored_size        H,W of the stored frame (default: each file's own size).
  --keypoint_x_offset  as config.data.keypoint_x_offset (-40: PATN's 176-wide crop of 256×256 files).
"""

import os
import time

from absl import flags

from hpt_jax import cli

_IMAGES = flags.DEFINE_string("images", None, "Folder of the images.")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "PATN annotation CSV naming the images.")
_OUTPUT = flags.DEFINE_string("output", None, "Cache file (default: faces.npz next to --annotations).")
_STORED_SIZE = flags.DEFINE_list("stored_size", None, "H,W of the stored frame (default: the files' size).")
_OFFSET = flags.DEFINE_integer("keypoint_x_offset", 0, "As config.data.keypoint_x_offset.")


def prepare(images: str, annotations: str, output: str | None = None, stored_size=None,
            keypoint_x_offset: int = 0, echo=print):
  """Detects the faces of every annotated image and writes the cache; returns ``(path, FaceCache)``.

  Raises:
    hpt_jax.input_pipeline.patn_format.DataError: a bad annotation row or image (names it).
    hpt_jax.errors.MissingDependencyError: no dlib (the ``faces`` extra).
  """
  from hpt_jax.input_pipeline import faces, patn_format
  size = tuple(int(s) for s in stored_size) if stored_size else None
  kps = patn_format.read_annotations(annotations, keypoint_x_offset)
  crop_x = -int(keypoint_x_offset) if keypoint_x_offset < 0 else 0
  items = [(name, lambda p=os.path.join(images, name): patn_format.open_stored_image(p, size, crop_x), kp)
           for name, kp in sorted(kps.items())]
  t0 = time.perf_counter()
  cache = faces.detect(items, logger=echo)
  path = output or os.path.join(os.path.dirname(os.path.abspath(annotations)), faces.CACHE_FILE)
  cache.save(path)
  echo(f"{path}: {cache.counts()} ({time.perf_counter() - t0:.0f} s)")
  return path, cache


def main(argv):
  del argv
  prepare(_IMAGES.value, _ANNOTATIONS.value, _OUTPUT.value, _STORED_SIZE.value, _OFFSET.value)


def run() -> None:
  """Console script ``hpt-prepare-faces`` (and ``python launch/prepare_faces.py``)."""
  cli.run(main, required=("images", "annotations"), doc=__doc__)


if __name__ == "__main__":
  run()
