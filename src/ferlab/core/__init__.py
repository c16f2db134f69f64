"""Foundations, no machine learning: the error types, the label sets, frozen configs, atomic
file writes, processes and threads, and where tensors run (device, precision).

    errors      UserError and the error types of the light paths
    labels      FER2013's and FER+'s class names: the one tuple per label set
    config      the frozen dataclass configs saved with every run; YAML, overrides
    files       atomic writes, folder locks, outputs that never overwrite inputs
    processes   child processes that die with their parent
    threads     the one place a process-wide thread setting changes
    runtime     device (cuda > mps > cpu), precision, memory format
"""
