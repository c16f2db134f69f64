"""Class names of the two label sets: the single source of truth for label ids.

FER2013's `emotion` column uses `EMOTIONS`' ids; FER+ (Microsoft's crowd relabelling
of the same faces) uses `FERPLUS_EMOTIONS`, in another order (its index 0 is
neutral, FER2013's id 0 is angry), and its vote files add two columns,
`FERPLUS_VOTE_COLUMNS`. The seed report (and many peers) got
ids 4-6 wrong or took the order from alphabetical folder names; every mapping in
ferlab goes through this module instead.

Depends on: nothing.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
# FER+ label.csv / fer2013new.csv: ten vote counts per face, in this order.
FERPLUS_EMOTIONS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = FERPLUS_EMOTIONS + ("unknown", "NF")
LABEL_SETS = {"fer2013": EMOTIONS, "ferplus": FERPLUS_EMOTIONS}

# Folder names seen in public releases of FER2013 and its derivatives.
_ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
}


def emotion_id(name: str) -> int | None:
    """FER2013 id of a folder name such as 'Angry', 'surprised' or '3'; None if unknown."""
    key = name.strip().lower()
    if key.isascii() and key.isdigit() and int(key) < NUM_CLASSES:
        return int(key)
    canonical = _ALIASES.get(key)
    return None if canonical is None else EMOTIONS.index(canonical)


def canonical_emotion(name: str) -> str | None:
    """The FER2013 name for a class name of either label set ('happiness' -> 'happy'); None
    for a class FER2013 lacks (contempt) or an unknown name."""
    canonical = _ALIASES.get(name.strip().lower())
    return canonical


def class_mapping(source: tuple[str, ...], target: tuple[str, ...]) -> dict[int, int]:
    """source class id -> target class id for classes naming the same emotion in both sets
    (FER2013 'happy' = FER+ 'happiness'); classes without a counterpart are left out."""
    index = {canonical_emotion(n) or n.lower(): i for i, n in enumerate(target)}
    out = {}
    for i, name in enumerate(source):
        j = index.get(canonical_emotion(name) or name.lower())
        if j is not None:
            out[i] = j
    return out


def known_folder_names() -> str:
    return ", ".join(sorted(_ALIASES))
