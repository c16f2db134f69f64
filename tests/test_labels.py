from ferlab.core.labels import EMOTIONS, emotion_id


def test_fer2013_order_is_the_single_source_of_truth():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_folder_aliases_map_by_name_not_alphabet():
    assert emotion_id("Anger") == 0
    assert emotion_id("surprised") == 5
    assert emotion_id("sad") == 4
    assert emotion_id("neutral") == 6
    assert emotion_id("Fearful") == 2
    assert emotion_id("3") == 3
    assert emotion_id("contempt") is None
    assert emotion_id("9") is None
