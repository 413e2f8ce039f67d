"""Tests for hpt_jax.input_pipeline.pipeline on the vendored DeepFashion sample."""

import os

import grain
from hpt_jax.data import DEEPFASHION_SAMPLE
import numpy as np
import pytest

from hpt_jax import pose
from hpt_jax.input_pipeline import patn_format, pipeline

SAMPLE = DEEPFASHION_SAMPLE
SIZE = (256, 176)


def _examples(pairs="pairs_train.csv"):
  examples, _ = patn_format.load_pair_examples(
      os.path.join(SAMPLE, "img"), os.path.join(SAMPLE, "annotation.csv"),
      os.path.join(SAMPLE, pairs), SIZE)
  return examples


@pytest.fixture(scope="module")
def train_examples():
  return _examples()


@pytest.fixture(scope="module")
def eval_examples():
  return _examples("pairs_eval.csv")


def _train(examples, seed=0, image_size=SIZE, batch_size=2, **kwargs):
  return pipeline.create_pair_dataset(examples, image_size=image_size, sigma=3.0,
                                      batch_size=batch_size, seed=seed, train=True, flip=True,
                                      **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_shapes_dtypes_ranges(train_examples):
  batch = next(iter(_train(train_examples, batch_size=3)))
  assert set(batch) == set(pipeline.BATCH_KEYS)
  for side in ("source", "target"):
    image, heatmaps, keypoints = (batch[f"{side}_{k}"] for k in ("image", "pose", "keypoints"))
    assert image.shape == (3, 256, 176, 3) and image.dtype == np.float32
    assert -1.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.1
    assert heatmaps.shape == (3, 256, 176, 18) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() == 1.0
    assert keypoints.shape == (3, 18, 2) and keypoints.dtype == np.float32
    for k in keypoints:
      pose.validate_keypoints(k, *SIZE)
  assert batch["pair_index"].shape == (3,) and batch["pair_index"].dtype == np.int32


def test_resized_output(train_examples):
  batch = next(iter(_train(train_examples, image_size=(64, 44))))
  assert batch["source_image"].shape == (2, 64, 44, 3)
  assert batch["target_pose"].shape == (2, 64, 44, 18)
  for k in batch["source_keypoints"]:
    pose.validate_keypoints(k, 64, 44)
  np.testing.assert_allclose(
      batch["target_pose"], pose.keypoints_to_heatmaps(batch["target_keypoints"], 64, 44, 3.0))


def test_deterministic_given_seed(train_examples):
  first = _take(iter(_train(train_examples, seed=7, image_size=(64, 44))), 3)
  again = _take(iter(_train(train_examples, seed=7, image_size=(64, 44))), 3)
  for a, b in zip(first, again):
    _assert_batches_equal(a, b)
  other = _take(iter(_train(train_examples, seed=8, image_size=(64, 44))), 3)
  assert not all(np.array_equal(a["pair_index"], b["pair_index"]) for a, b in zip(first, other))


def test_get_state_set_state_resumes_exactly(train_examples):
  dataset = _train(train_examples, seed=3, image_size=(64, 44))
  iterator = iter(dataset)
  _take(iterator, 2)
  state = iterator.get_state()
  expected = next(iterator)
  resumed = iter(dataset)
  resumed.set_state(state)
  _assert_batches_equal(next(resumed), expected)


def test_orbax_checkpoint_round_trip(train_examples, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  dataset = _train(train_examples, seed=4, image_size=(64, 44))
  iterator = iter(dataset)
  _take(iterator, 2)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = next(iterator)
    restored = manager.restore(2, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointRestore(iter(dataset))))
  _assert_batches_equal(next(restored.data_iter), expected)


def test_eval_shards_are_disjoint_and_cover(eval_examples):
  seen = []
  for shard_index in range(2):
    dataset = pipeline.create_pair_dataset(
        eval_examples, image_size=(32, 22), sigma=1.0, batch_size=5, seed=0, train=False,
        flip=True, shard_index=shard_index, shard_count=2, drop_remainder=False)
    indices = np.concatenate([b["pair_index"] for b in dataset])
    np.testing.assert_array_equal(indices, np.arange(len(eval_examples))[shard_index::2])
    seen.append(set(indices.tolist()))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(len(eval_examples)))


def test_eval_has_no_flip(eval_examples):
  dataset = pipeline.create_pair_dataset(
      eval_examples[:4], image_size=SIZE, sigma=3.0, batch_size=4, seed=0, train=False, flip=True)
  batch = next(iter(dataset))
  np.testing.assert_array_equal(batch["source_keypoints"],
                                [e.source_keypoints for e in eval_examples[:4]])


def test_flip_consistency(train_examples):
  batches = _take(iter(_train(train_examples, seed=1, batch_size=4)), 3)
  flipped_count = 0
  for batch in batches:
    for i, index in enumerate(batch["pair_index"]):
      example = train_examples[index]
      source_image = patn_format.decode_image(example.source_path)
      if np.array_equal(batch["target_keypoints"][i], example.target_keypoints):
        np.testing.assert_array_equal(batch["source_image"][i], source_image)
        continue
      flipped_count += 1
      np.testing.assert_array_equal(batch["target_keypoints"][i],
                                    pose.flip_keypoints(example.target_keypoints, SIZE[1]))
      np.testing.assert_array_equal(batch["source_keypoints"][i],
                                    pose.flip_keypoints(example.source_keypoints, SIZE[1]))
      np.testing.assert_array_equal(batch["source_image"][i], source_image[:, ::-1])
      np.testing.assert_allclose(
          batch["target_pose"][i],
          pose.keypoints_to_heatmaps(batch["target_keypoints"][i], *SIZE, 3.0))
      np.testing.assert_allclose(  # == mirrored original heatmaps with the L/R channel swap
          batch["source_pose"][i],
          np.flip(pose.keypoints_to_heatmaps(example.source_keypoints, *SIZE, 3.0),
                  axis=1)[..., list(pose.FLIP_PERMUTATION)], atol=1e-6)
  assert 0 < flipped_count < 12


def test_decode_error_names_file(train_examples, tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"\xff\xd8 not really a jpeg")
  examples = [patn_format.PairExample(str(bad), train_examples[0].target_path,
                                      train_examples[0].source_keypoints,
                                      train_examples[0].target_keypoints, row=9)]
  dataset = pipeline.create_pair_dataset(examples, image_size=SIZE, sigma=3.0, batch_size=1,
                                         seed=0, train=False, flip=False)
  with pytest.raises(patn_format.DataError, match="broken.jpg.*line 9"):
    next(iter(dataset))


def test_multiprocessing_matches_in_process(eval_examples):
  def first_batch(num_workers):
    dataset = pipeline.create_pair_dataset(
        eval_examples[:6], image_size=(32, 22), sigma=1.0, batch_size=3, seed=0, train=False,
        flip=False, num_workers=num_workers)
    iterator = iter(dataset)
    try:
      return next(iterator)
    finally:
      iterator.close()
  _assert_batches_equal(first_batch(1), first_batch(0))


def test_pipeline_throughput(eval_examples):
  dataset = pipeline.create_pair_dataset(
      eval_examples, image_size=(32, 22), sigma=1.0, batch_size=4, seed=0, train=True, flip=True)
  assert pipeline.pipeline_throughput(iter(dataset), num_batches=2) > 0


def test_load_examples_from_config():
  config = pytest.importorskip("configs.deepfashion_drn").get_config("cpu")
  messages = []
  examples = pipeline.load_examples(config.data, logger=messages.append)
  assert len(examples) == 322 and "322 valid pairs" in messages[-1]
  batch = next(iter(pipeline.create_pair_dataset(
      examples, image_size=tuple(config.data.image_size), sigma=config.pose.sigma, batch_size=2,
      seed=0, train=True, flip=config.data.flip)))
  assert batch["source_image"].shape == (2, *config.data.image_size, 3)
  assert tuple(config.data.image_size) != SIZE  # exercises the resize path


def test_local_descriptor_boxes_streamed_with_the_batch(train_examples):
  """HPN mode: no pose maps, boxes of the (possibly flipped) target keypoints at the output size."""
  size = (128, 88)
  ds = _train(train_examples, image_size=size, batch_size=4, pose_maps=False, local_descriptors=31)
  batch = next(iter(ds))
  assert "source_pose" not in batch and "target_pose" not in batch
  assert batch["target_boxes"].shape == (4, 31, 4) and batch["target_boxes"].dtype == np.int32
  assert batch["target_box_valid"].shape == (4, 31)
  for i in range(4):
    boxes, valid = pose.local_descriptor_boxes(batch["target_keypoints"][i], 31, size)
    np.testing.assert_array_equal(batch["target_boxes"][i], boxes)
    np.testing.assert_array_equal(batch["target_box_valid"][i], valid)
  b = batch["target_boxes"][batch["target_box_valid"]]
  assert len(b) > 4 * 18 and np.all(b[:, 2] - b[:, 0] == 16) and np.all(b[:, 3] <= size[1])
  with pytest.raises(ValueError, match="local_descriptors"):
    _train(train_examples, local_descriptors=20)


def test_stored_size_is_checked_and_framing_maps_keypoints():
  from hpt_jax.configs import deepfashion_drn
  data = deepfashion_drn.get_config("tiny").eval_data
  assert pipeline.stored_size(data) == (256, 176)
  data.stored_size = (128, 88)
  with pytest.raises(patn_format.DataError, match=r"outside the 128x88 image .*the config's data.stored_size"):
    pipeline.load_examples(data)
  data.stored_size = (512, 352)     # every keypoint inside: the image check names the size and the field
  with pytest.raises(patn_format.DataError, match=r"image is 256x176 \(HxW\), expected 512x352 \(the config's data.stored_size"):
    pipeline.load_examples(data)
  # frame_keypoints: +40 columns of padding to 256, then 256x256 -> 64x64 with pixel centres.
  kp = np.array([[[10.0, 20.0]] + [[-1.0, -1.0]] * 17], np.float32)
  out = pipeline.frame_keypoints(kp, (256, 176), 256, (64, 64))
  np.testing.assert_allclose(out[0, 0], [(10 + 0.5) / 4 - 0.5, (20 + 40 + 0.5) / 4 - 0.5])
  np.testing.assert_array_equal(out[0, 1:], -1.0)
  assert pipeline.frame_padding((256, 176), 256) == (40, 256) and pipeline.frame_padding((256, 256), 256) == (0, 256)
  assert pipeline.frame_padding((256, 176), 0) == (0, 176)
