"""Running a trained model: checkpoints, the shipped models, test-time augmentation,
calibration, and one `Classifier` interface over PyTorch and ONNX Runtime.

    checkpoint     self-describing .pt files; the one loader
    shipped        the models inside the package, their names, the one model-reference resolver
    tta            test-time augmentation: views and their average (numpy or torch)
    torch_proba    a PyTorch model's probabilities for uint8 faces
    classifier     load_classifier(ref): any model -> predict_proba (PyTorch or ONNX Runtime)
    temperature    calibration maths: fit, apply and score a temperature
    calibration    calibration workflow: fit on a validation split, store in the model file
    ensemble_file  `ferlab ensemble`: several models -> one ensemble checkpoint
    export         ONNX export, int8 quantization
    explain        saliency maps (Grad-CAM, integrated gradients)
"""
