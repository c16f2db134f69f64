"""ferlab: facial expression recognition on FER2013, from the seed report's CNN to a served model.

The Python API keeps the seed report's vocabulary:

    from ferlab import build_model, train, evaluate, plot_loss_acc, load_config
"""

__version__ = "0.1.0"

from .checkpoint import load_checkpoint  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .data import FerData, load_dataset  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .labels import EMOTIONS  # noqa: E402
from .models import build_model, model_summary  # noqa: E402
from .plots import plot_loss_acc  # noqa: E402
from .recognizer import EmotionRecognizer  # noqa: E402
from .train import train  # noqa: E402

__all__ = [
    "EMOTIONS", "Config", "EmotionRecognizer", "FerData", "build_model", "evaluate",
    "load_checkpoint", "load_config", "load_dataset", "model_summary", "plot_loss_acc", "train",
]
