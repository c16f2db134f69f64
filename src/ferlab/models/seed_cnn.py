"""The seed report's configurable CNN, with the report's parameter names and semantics.

Per block: `layer_num` x (Conv2d 'same' padding + ReLU) with the block's filter
count, then MaxPool2d(pool_size, strides) with Keras' default 'valid' padding.
Then Flatten, Dropout, Linear to the classes (softmax lives in the loss).

Depends on: labels, api (SequentialNet), registry; torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..core.labels import NUM_CLASSES
from .api import SequentialNet
from .registry import ModelConfigError, positive, register_model


def pooled_size(size: int, pool_size: int, strides: int) -> int:
    """Spatial size after a 'valid' max-pool (Keras MaxPool2D default)."""
    return (size - pool_size) // strides + 1 if size >= pool_size else 0


def check_spatial(block_num: int, pool_size: int, strides: int, input_size: int = 48) -> int:
    """Refuse configurations that shrink the input below 1x1; return the final size."""
    sizes, size = [], input_size
    for _ in range(block_num):
        size = pooled_size(size, pool_size, strides)
        sizes.append(size)
    if size < 1:
        trail = " -> ".join(f"{s}x{s}" if s > 0 else "<1x1" for s in sizes)
        raise ModelConfigError(
            f"block_num={block_num} with pool_size={pool_size}, strides={strides} shrinks the "
            f"{input_size}x{input_size} input below 1x1 (after each block: {trail}); "
            "use fewer blocks, a smaller pool or stride"
        )
    return size


@register_model
def seed_cnn(
    block_num: int = 3,
    layer_num: int = 2,
    filters_in_each_block: Sequence[int] = (32, 64, 128),
    kernel_size: int = 3,
    pool_size: int = 2,
    strides: int = 2,
    dropout_rate: float = 0.0,
    num_classes: int = NUM_CLASSES,
    in_chans: int = 1,
    input_size: int = 48,
) -> SequentialNet:
    positive(kernel_size=kernel_size, pool_size=pool_size, strides=strides,
             filters_in_each_block=list(filters_in_each_block))
    filters = list(filters_in_each_block)
    if block_num < 1 or layer_num < 1:
        raise ModelConfigError(f"block_num and layer_num must be >= 1, got {block_num}, {layer_num}")
    if len(filters) < block_num:
        raise ModelConfigError(
            f"filters_in_each_block has {len(filters)} entries for block_num={block_num}"
        )
    if not 0.0 <= dropout_rate < 1.0:
        raise ModelConfigError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    final = check_spatial(block_num, pool_size, strides, input_size)

    layers: list[nn.Module] = []
    channels = in_chans
    for block in range(block_num):
        for layer in range(layer_num):
            layers.append(nn.Conv2d(channels, filters[block], kernel_size, padding="same"))
            channels = filters[block]
            if layer < layer_num - 1:
                layers.append(nn.ReLU(inplace=True))
        # Max-pooling commutes with ReLU (both are monotone), so the block's last ReLU runs
        # after the pool: the same function and gradients, on a tensor 4-9x smaller.
        # In-place ReLUs also spare one activation-sized buffer each.
        layers += [nn.MaxPool2d(pool_size, strides), nn.ReLU(inplace=True)]
    head_start = len(layers)
    layers += [
        nn.Flatten(),
        nn.Dropout(dropout_rate),
        nn.Linear(channels * final * final, num_classes),
    ]
    model = SequentialNet(layers, head_start)
    # Keras initialises Conv2D and Dense with Glorot-uniform and zero biases;
    # matching it keeps the seed's curves comparable.
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


