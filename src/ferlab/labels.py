"""FER2013 class names: the single source of truth for label ids.

FER2013's `emotion` column uses these ids. The seed report (and many peers) got
ids 4-6 wrong or took the order from alphabetical folder names; every mapping in
ferlab goes through this module instead.

Depends on: nothing.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)

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
    if key.isdigit() and int(key) < NUM_CLASSES:
        return int(key)
    canonical = _ALIASES.get(key)
    return None if canonical is None else EMOTIONS.index(canonical)


def known_folder_names() -> str:
    return ", ".join(sorted(_ALIASES))
