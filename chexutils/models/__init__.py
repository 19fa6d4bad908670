"""Models: the backbone registry, the backbones (which register themselves on import), checkpoints."""

from chexutils.models import backbones  # noqa: F401  registers densenet121, xception, xrv-densenet121, fractalnet
