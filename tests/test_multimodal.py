"""areal_core.multimodal and the images in SequenceBatch: the image string format, placeholder
expansion, and per-sequence inputs staying with their sequences through select / concat."""

from __future__ import annotations

import pytest
import torch

from areal_core.api.types import Trajectory
from areal_core.data.batch import SequenceBatch
from areal_core.errors import ArealError
from areal_core.multimodal import concat_inputs, decode_image, encode_image, expand_image_tokens
from areal_core.testing.tiny import random_picture


def test_images_round_trip_as_base64_and_data_urls():
    picture = random_picture(3)
    text = encode_image(picture)
    assert list(decode_image(text).tobytes()) == list(picture.tobytes())  # PNG: lossless
    assert list(decode_image("data:image/png;base64," + text).tobytes()) == list(picture.tobytes())
    with pytest.raises(ArealError, match="image_data\\[2\\]: not a base64-encoded image"):
        decode_image("aGVsbG8=", "image_data[2]")  # base64 of "hello"


def test_placeholders_expand_per_image_and_mismatches_are_named():
    assert expand_image_tokens([1, 9, 2, 9, 3], 9, [2, 3]) == [1, 9, 9, 2, 9, 9, 9, 3]
    with pytest.raises(ArealError, match="1 image placeholder tokens .* for 2 images"):
        expand_image_tokens([1, 9, 2], 9, [2, 3])


def traj(n: int, media: dict) -> Trajectory:
    return Trajectory(input_ids=list(range(n)), loss_mask=[1] * n, logprobs=[0.0] * n, versions=[0] * n, reward=1.0,
                      multimodal_inputs=media)


def test_sequence_batch_keeps_each_sequences_images():
    a = {"pixel_values": torch.ones(4, 2), "image_grid_thw": torch.tensor([[1, 2, 2]])}
    c = {"pixel_values": torch.zeros(8, 2), "image_grid_thw": torch.tensor([[1, 2, 4]])}
    batch = SequenceBatch.from_trajectories([traj(3, a), traj(2, {}), traj(4, c)])
    assert batch.multimodal == [a, {}, c]
    picked = batch.select([2, 0])
    assert picked.multimodal == [c, a]
    joined = SequenceBatch.concat([picked, SequenceBatch.from_trajectories([traj(2, {})])])
    assert joined.multimodal == [c, a, {}] and joined.num_seqs == 3
    both = concat_inputs(joined.multimodal)
    assert both["pixel_values"].shape == (12, 2) and both["image_grid_thw"].tolist() == [[1, 2, 4], [1, 2, 2]]
    assert SequenceBatch.from_trajectories([traj(2, {})]).multimodal == []  # text batches carry nothing
