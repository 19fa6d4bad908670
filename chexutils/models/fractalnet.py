"""FractalNet: a deep CNN built from self-similar fractal blocks instead of residual connections.

Larsson, Maire & Shakhnarovich (2016), "FractalNet: Ultra-Deep Neural Networks without
Residuals", arXiv:1605.07648. Written from the paper's description:

* a block with one column is one ``conv`` (3x3 conv - BatchNorm - ReLU); the expansion rule
  ``f_{C+1}(z) = join(f_C(f_C(z)), conv(z))`` gives a block with ``C`` columns, column ``c``
  (1-based) holding ``2**(c-1)`` convs;
* ``join`` is the element-wise mean of its inputs; nested joins that fall at the same depth are
  one join over all the columns that end there (the paper's Figure 1), so the last join of a
  block averages all ``C`` columns;
* blocks are separated by 2x2 max-pooling; the network's output is the last block's channels
  after global average pooling (a feature vector for a classifier head);
* drop-path regularises training: *local* drops each join input with probability ``p`` and keeps
  at least one; *global* picks one column for the whole network for a mini-batch. The paper mixes
  the two per mini-batch; ``global_drop_ratio`` is the share of global mini-batches. In eval mode
  every join averages all its inputs.
"""

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """The paper's basic ``conv`` unit: 3x3 convolution (same padding), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FractalBlock(nn.Module):
    """One fractal block with ``columns`` columns; column ``j`` (0-based) holds ``2**j`` convs."""

    def __init__(self, in_channels: int, out_channels: int, columns: int, drop_path: float):
        super().__init__()
        self.num_columns = columns
        self.drop_path = drop_path
        self.depth = 2 ** (columns - 1)  # convs on the deepest column
        self.columns = nn.ModuleList(
            nn.ModuleList(conv_bn_relu(in_channels if k == 0 else out_channels, out_channels) for k in range(2**j))
            for j in range(columns)
        )

    def span(self, column: int) -> int:
        """How many depth steps one conv of ``column`` covers (deepest column: 1)."""
        return self.depth // 2**column

    def forward(self, z: torch.Tensor, global_column: int | None = None) -> torch.Tensor:
        """Run the block; ``global_column`` (training only) keeps just that column."""
        column_inputs = [z] * self.num_columns
        joined = z
        for step in range(1, self.depth + 1):
            ending = [j for j in range(self.num_columns) if step % self.span(j) == 0]
            kept = self.kept_columns(ending, global_column)
            if not kept:  # global drop-path: the chosen column does not end here
                continue
            outputs = [self.columns[j][step // self.span(j) - 1](column_inputs[j]) for j in kept]
            joined = outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(dim=0)
            for j in ending:  # every column that ends here continues from the join
                column_inputs[j] = joined
        return joined

    def kept_columns(self, ending: list[int], global_column: int | None) -> list[int]:
        """Which of the join's input columns survive drop-path (all of them in eval mode)."""
        if global_column is not None:
            return [global_column] if global_column in ending else []
        if not self.training or self.drop_path <= 0 or len(ending) == 1:
            return ending
        keep = torch.rand(len(ending)) >= self.drop_path
        if not keep.any():  # a join always keeps at least one input
            keep[torch.randint(len(ending), ()).item()] = True
        return [j for j, k in zip(ending, keep.tolist()) if k]


class FractalNet(nn.Module):
    """Fractal blocks separated by 2x2 max-pooling, then global average pooling -> features."""

    def __init__(
        self,
        columns: int = 3,
        blocks: int = 5,
        channels: Sequence[int] | None = None,
        drop_path: float = 0.15,
        global_drop_ratio: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if columns < 1 or blocks < 1:
            raise ValueError(f"FractalNet needs columns >= 1 and blocks >= 1, got {columns}, {blocks}")
        if not 0.0 <= drop_path < 1.0 or not 0.0 <= global_drop_ratio <= 1.0:
            raise ValueError(
                f"drop_path must be in [0, 1) and global_drop_ratio in [0, 1], got {drop_path}, {global_drop_ratio}"
            )
        if channels is None:  # the paper's CIFAR widths, widened no further after 512
            extra = max(0, blocks - len(DEFAULT_CHANNELS))
            channels = DEFAULT_CHANNELS[:blocks] + (DEFAULT_CHANNELS[-1],) * extra
        channels = tuple(int(c) for c in channels)
        if len(channels) != blocks:
            raise ValueError(f"channels {channels} must give one width per block ({blocks} blocks)")
        self.num_columns = columns
        self.global_drop_ratio = global_drop_ratio
        self.num_features = channels[-1]
        widths = (in_channels,) + channels
        self.blocks = nn.ModuleList(FractalBlock(widths[b], widths[b + 1], columns, drop_path) for b in range(blocks))
        self.pool = nn.MaxPool2d(kernel_size=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` images to ``(B, num_features)`` pooled features."""
        global_column = self.sample_global_column()
        x = images
        for index, block in enumerate(self.blocks):
            if index > 0:
                x = self.pool(x)
            x = block(x, global_column)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def sample_global_column(self) -> int | None:
        """In training, with probability ``global_drop_ratio``, the one column this batch uses."""
        if not self.training or self.global_drop_ratio <= 0:
            return None
        if torch.rand(()).item() >= self.global_drop_ratio:
            return None
        return int(torch.randint(self.num_columns, ()).item())
