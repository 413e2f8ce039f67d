r"""Puts the person of any photo into a new pose, or a pose sequence into a video.

Usage::

  python launch/transfer.py --workdir=runs/drn_cpu --source=me.jpg --target=pose.json --output=out.png
  python launch/transfer.py --workdir=runs/drn_cpu --source=me.jpg --target=poses/ --output=dance  # dance.gif + dance.mp4

``--target`` is a keypoint file (OpenPose JSON, COCO-18 or BODY_25; one PATN CSV row; hpt-jax
JSON), another photo, a folder of photos or keypoint files (frames in name order) or a video. One
target writes one image; a folder or video writes a GIF and an MP4. Photos get their keypoints from
MediaPipe BlazePose with its person detector (``python launch/fetch_models.py`` first); the
largest person is used. The library behind it: ``hpt_jax/transfer.py``; details and limits:
``docs/transfer.md``.

Flags:
  --config        the config the run was trained with (``file.py[:preset]`` plus overrides).
                  Default: the run's ``DIR/config.json`` (or an exported model's inference.json).
  --workdir       the run folder (or an exported model folder).
  --source        the photo of the person (any size, EXIF orientation, grayscale, RGBA, 16-bit).
  --target        keypoint file, photo, folder or video.
  --output        the image to write (``.png`` added without an extension); for a sequence the
                  stem of ``<stem>.gif`` and ``<stem>.mp4``.
  --panel         also write ``<output>_panel``: source with its estimated skeleton | target
                  skeleton | result.
  --paste_back    map the result back into the source photo's frame.
  --no_retarget   keep the target skeleton's own framing instead of matching the source's torso.
  --remove_background  composite the source person on white first (BlazePose segmentation).
  --source_keypoints   a keypoint file for the source instead of estimating them.
  --confidence_threshold  OpenPose JSON: joints below this confidence are missing (0.1).
  --margin        crop margin around the joints, as a fraction of their height (0.12).
  --fps           frames per second of a sequence (default: the video's, else 8).
  --frame_step, --max_frames  use every N-th frame / at most N frames of a folder or video.
  --step, --level, --batch_size  checkpoint step, HPN level, pairs per generated batch.
  --models_dir    where the MediaPipe models are (default $HPT_JAX_MODELS_DIR or ~/.cache/hpt_jax/models).

Errors about the input (no person in the photo, fewer than 6 joints, an unreadable file, a keypoint
file with the wrong joint count) are printed as one line ``error: <file>: <what was found>`` and
exit with status 1.
"""


from absl import flags
from ml_collections import config_flags

from hpt_jax import cli, keypoint_files, runs, transfer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config the run was trained with (default: "
                                          "the run's config.json).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder holding checkpoints/ (or an exported model).")
_SOURCE = flags.DEFINE_string("source", None, "Photo of the person.")
_TARGET = flags.DEFINE_string("target", None, "Keypoint file, photo, folder of them, or video.")
_OUTPUT = flags.DEFINE_string("output", None, "Image to write; for a sequence the stem of .gif and .mp4.")
_PANEL = flags.DEFINE_bool("panel", False, "Also write source | target skeleton | result panels.")
_PASTE_BACK = flags.DEFINE_bool("paste_back", False, "Map the result back into the source photo.")
_NO_RETARGET = flags.DEFINE_bool("no_retarget", False, "Keep the target skeleton's own framing.")
_REMOVE_BACKGROUND = flags.DEFINE_bool("remove_background", False, "Composite the source person on white first.")
_SOURCE_KEYPOINTS = flags.DEFINE_string("source_keypoints", None, "Keypoint file for the source (no estimation).")
_CONFIDENCE = flags.DEFINE_float("confidence_threshold", keypoint_files.DEFAULT_CONFIDENCE_THRESHOLD,
                                 "OpenPose JSON: joints below this confidence are missing.")
_MARGIN = flags.DEFINE_float("margin", transfer.DEFAULT_MARGIN, "Crop margin, a fraction of the joints' height.")
_FPS = flags.DEFINE_float("fps", None, "Frames per second of a sequence (default: the video's, else 8).")
_FRAME_STEP = flags.DEFINE_integer("frame_step", 1, "Use every N-th frame of a folder or video.", lower_bound=1)
_MAX_FRAMES = flags.DEFINE_integer("max_frames", None, "At most N frames of a folder or video.", lower_bound=1)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_LEVEL = flags.DEFINE_integer("level", None, "HPN: level index to generate with (default: the highest trained).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Pairs per generated batch (default config.batch_size).")
_MODELS_DIR = flags.DEFINE_string("models_dir", None, "Folder of the MediaPipe models.")


def main(argv):
  del argv  # cli.run rejects extra arguments
  runs.quiet_library_logs()
  transfer.run(_CONFIG.value, _WORKDIR.value, _SOURCE.value, _TARGET.value, _OUTPUT.value,
               step=_STEP.value, level=_LEVEL.value, batch_size=_BATCH_SIZE.value,
               source_keypoints=_SOURCE_KEYPOINTS.value, remove_background=_REMOVE_BACKGROUND.value,
               confidence_threshold=_CONFIDENCE.value, frame_step=_FRAME_STEP.value, max_frames=_MAX_FRAMES.value,
               models_dir=_MODELS_DIR.value, retarget_pose=not _NO_RETARGET.value, panel=_PANEL.value,
               paste_back=_PASTE_BACK.value, margin=_MARGIN.value, fps=_FPS.value)


def run() -> None:
  """Console script ``hpt-transfer`` (and ``python launch/transfer.py``)."""
  cli.run(main, config_flag=_CONFIG, required=("workdir", "source", "target", "output"), doc=__doc__)


if __name__ == "__main__":
  run()
