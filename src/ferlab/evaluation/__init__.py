"""Scores, figures and reports of a model on labelled faces.

    scores   evaluate(): accuracy, per-class report, confusion matrix, calibration metrics
    report   the HTML evaluation page (`ferlab evaluate --html`)
    plots    the seed's figures: loss/accuracy curves, confusion matrix, reliability diagram
"""
