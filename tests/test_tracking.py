"""Face tracks across frames: ids follow faces, survive short gaps, and are never reused."""

from __future__ import annotations

import numpy as np
import pytest

from ferlab.photos.tracking import IouTracker, iou_matrix


def test_iou_of_known_boxes():
    iou = iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    assert iou[0] == pytest.approx([1.0, 50 / 150, 0.0])
    assert iou_matrix([], [[0, 0, 1, 1]]).shape == (0, 1)


def test_two_faces_keep_their_ids_while_moving_and_in_either_order():
    tracker = IouTracker()
    left, right = [10, 50, 60, 60], [300, 40, 80, 80]
    assert tracker.update([left, right], 0) == [1, 2]
    for frame in range(1, 20):  # both drift 3 px a frame; the detector's order flips each frame
        left = [left[0] + 3, left[1], 60, 60]
        right = [right[0] - 3, right[1] + 1, 80, 80]
        boxes = [left, right] if frame % 2 else [right, left]
        ids = tracker.update(boxes, frame)
        assert ids == ([1, 2] if frame % 2 else [2, 1])


def test_short_gap_keeps_the_id_long_gap_and_newcomers_get_new_ones():
    tracker = IouTracker(max_age=3)
    face = [100, 100, 50, 50]
    assert tracker.update([face], 0) == [1]
    assert tracker.update([], 1) == [] and tracker.update([], 2) == []
    assert tracker.update([face], 3) == [1]  # missed for two frames: same person
    assert tracker.update([face, [400, 100, 50, 50]], 4) == [1, 2]
    assert tracker.update([face], 9) == [3]  # gone for 5 > 3 frames: a new track, ids not reused
    assert tracker.update([[0, 0, 10, 10]], 10) == [4]


def test_a_jump_across_the_frame_is_a_new_track_and_bad_settings_are_refused():
    tracker = IouTracker(min_iou=0.3)
    assert tracker.update([[0, 0, 40, 40]], 0) == [1]
    assert tracker.update([[200, 200, 40, 40]], 1) == [2]
    with pytest.raises(ValueError, match="min_iou"):
        IouTracker(min_iou=0)
    with pytest.raises(ValueError, match="max_age"):
        IouTracker(max_age=-1)


def test_many_random_faces_never_share_an_id_within_a_frame():
    rng = np.random.default_rng(0)
    tracker = IouTracker()
    for frame in range(50):
        boxes = [[int(x), int(y), 30, 30] for x, y in rng.integers(0, 300, (rng.integers(0, 6), 2))]
        ids = tracker.update(boxes, frame)
        assert len(set(ids)) == len(ids) == len(boxes) and all(i >= 1 for i in ids)


def test_live_tracks_are_those_seen_within_max_age():
    tracker = IouTracker(max_age=2)
    tracker.update([[0, 0, 10, 10], [50, 50, 10, 10]], 0)
    tracker.update([[1, 0, 10, 10]], 1)
    assert [t.id for t in tracker.live(2)] == [1, 2]
    assert [t.id for t in tracker.live(3)] == [1]
