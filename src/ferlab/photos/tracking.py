"""Face tracks across video frames: the same person keeps one id while they stay in view.

A small IoU tracker in the manner of SORT (Bewley et al. 2016) without its Kalman
filter: faces in a webcam or a clip move little between consecutive frames, so each
frame's detections are matched to the live tracks' last boxes by the optimal
assignment on intersection-over-union (scipy's Hungarian solver), pairs under
`min_iou` are not matched, an unmatched detection starts a new track, and a track
that goes unmatched for more than `max_age` frames ends (a missed detection or two
does not split a person into two tracks). Ids are 1, 2, 3, ... in order of first
appearance and are never reused.

Depends on: errors, faces (box IoU), numpy, scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scipy.optimize import linear_sum_assignment

from ..core.errors import InputError
from .faces import iou_matrix  # box geometry lives with the detector

Box = Sequence[int]  # x, y, w, h


@dataclass
class Track:
    id: int
    box: list[int]
    last_frame: int
    hits: int = 1


class IouTracker:
    def __init__(self, min_iou: float = 0.3, max_age: int = 10):
        if not 0 < min_iou <= 1:
            raise InputError(f"min_iou must be in (0, 1], got {min_iou}")
        if max_age < 0:
            raise InputError(f"max_age must be >= 0 frames, got {max_age}")
        self.min_iou, self.max_age = min_iou, max_age
        self.tracks: list[Track] = []
        self.next_id = 1

    def live(self, frame: int) -> list[Track]:
        """The tracks still open at `frame`: seen within the last `max_age` frames."""
        return [t for t in self.tracks if frame - t.last_frame <= self.max_age]

    def update(self, boxes: Sequence[Box], frame: int) -> list[int]:
        """The track id of each box detected in `frame` (frames in increasing order)."""
        self.tracks = self.live(frame)
        ids = [0] * len(boxes)
        iou = iou_matrix([t.box for t in self.tracks], boxes)
        if iou.size:
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.min_iou:
                    track = self.tracks[r]
                    track.box, track.last_frame, track.hits = list(boxes[c]), frame, track.hits + 1
                    ids[c] = track.id
        for c, box in enumerate(boxes):
            if not ids[c]:
                self.tracks.append(Track(self.next_id, list(box), frame))
                ids[c] = self.next_id
                self.next_id += 1
        return ids
