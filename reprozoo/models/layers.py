"""Building blocks shared by several architectures (no registered models here)."""
import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> dim-d tokens, as a stride-p conv (the study's way).

    (B, 3, H, W) -> (B, (H/p) * (W/p), dim)
    """

    def __init__(self, image_size: int = 32, patch_size: int = 2, dim: int = 192, in_channels: int = 3):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, dim, H/p, W/p) -> (B, N, dim)


def patch_embed_reference(embed: PatchEmbed, x: torch.Tensor) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The stride-p conv beside patches cut by unfold and projected by linear, with the conv's weights."""
    conv = embed.proj
    p = conv.kernel_size[0]
    patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)          # (B, N, 3*p*p)
    return "patch_embed vs unfold + linear", embed(x), F.linear(patches, conv.weight.flatten(1), conv.bias)
