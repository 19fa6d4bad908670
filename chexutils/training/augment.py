"""On-device training augmentation of the uint8 batches: random crop, horizontal flip, small rotation.

The original study (Irvin et al. 2019, CheXpert, section 5 and its appendix) reports that random crop and
random horizontal flip made its results worse; these fields let the workbook re-ask that question
(``configs/augmentation.yaml``). Everything happens on the training device after the batch arrives, on the
same uint8 images the cache holds: no image is decoded again per epoch, and no value is read back to the
host (the random draws come from a generator on the device, so the hot loop gains no host sync).

Per image, with the fields of ``TrainConfig``:

- ``augment_crop`` c < 1: a square window of side s * S, s uniform in [c, 1], at a uniformly random place
  inside the image, resized back to S x S (bilinear): a random crop with scale, as torchvision's
  RandomResizedCrop does at a fixed aspect ratio;
- ``augment_rotate`` r > 0: a rotation by an angle uniform in [-r, r] degrees about the centre (the corners
  it uncovers are 0, black, like zero padding);
- ``augment_flip`` f > 0: a left-right flip with probability f (exact: a reversed column order).

Crop and rotation are one affine resampling (``affine_grid`` / ``grid_sample``), rounded back to uint8.
The labels are untouched: an augmentation changes the pixels of a row, never which row it is (the loop
looks targets up by row). Draws are reproducible: the generator is re-seeded from (seed, epoch) at the
start of every epoch, so a resumed run augments its remaining epochs exactly as an uninterrupted one.
"""

import math

import torch
import torch.nn.functional as F

AUGMENT_FIELDS = ("augment_crop", "augment_flip", "augment_rotate")


class Augmentation:
    """Callable ``images (B, 1, S, S) uint8 -> images (B, 1, S, S) uint8`` on the images' device."""

    def __init__(self, crop: float = 1.0, flip: float = 0.0, rotate: float = 0.0, seed: int = 0, device="cpu"):
        self.crop, self.flip, self.rotate, self.seed = float(crop), float(flip), float(rotate), int(seed)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.start_epoch(0)

    @classmethod
    def from_config(cls, cfg, device) -> "Augmentation":
        return cls(cfg.augment_crop, cfg.augment_flip, cfg.augment_rotate, cfg.seed, device)

    @property
    def active(self) -> bool:
        """False when every augmentation is off (then the loop does not call it: bit-for-bit today's run)."""
        return self.crop < 1.0 or self.flip > 0.0 or self.rotate > 0.0

    def start_epoch(self, epoch: int) -> None:
        """Re-seed the device generator from (seed, epoch)."""
        self.generator.manual_seed(self.seed * 1_000_003 + epoch + 1)

    def describe(self) -> dict:
        """What config.json records."""
        return {"crop": self.crop, "flip": self.flip, "rotate": self.rotate, "active": self.active}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return images
        n, device = images.shape[0], images.device
        draw = lambda: torch.rand(n, generator=self.generator, device=device)  # noqa: E731
        if self.crop < 1.0 or self.rotate > 0.0:
            scale = self.crop + (1.0 - self.crop) * draw()  # window side as a share of the image
            shift_x, shift_y = (2 * draw() - 1) * (1 - scale), (2 * draw() - 1) * (1 - scale)
            angle = (2 * draw() - 1) * math.radians(self.rotate)
            cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
            theta = torch.stack(
                [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
            )  # (B, 2, 3): output coordinates -> input coordinates
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)
            moved = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            images = moved.round_().clamp_(0, 255).to(torch.uint8)
        if self.flip > 0.0:
            flipped = draw() < self.flip
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        return images
