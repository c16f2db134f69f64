"""Faces in photos and videos: detection, crops, the EmotionRecognizer, video tracking.

    faces        boxes, crop rules, drawing
    detection/   face detectors: YuNet (CNN), Haar (fallback)
    recognizer   EmotionRecognizer: image -> faces -> emotions
    predict      `ferlab predict`: files, folders, globs, videos; JSON / CSV / annotated copies
    video        per-frame predictions with track ids; the emotion timeline
    tracking     IoU tracker across frames
"""
