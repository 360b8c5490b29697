"""vit_tiny: the study's small ViT for 32x32 inputs (1,242,442 params).

Patch-2 conv embedding (256 tokens of dim 192), a zero-initialised class token
and learnable position embedding, dropout 0.1, 4 x torch's own
nn.TransformerEncoderLayer with its defaults (post-norm, ReLU) at 8 heads and
MLP ratio 2, then LayerNorm + linear on the class token.
"""
import torch
from torch import nn

from reprozoo.models import register_model
from reprozoo.models.layers import PatchEmbed


class ViT(nn.Module):
    def __init__(self, num_classes=10, image_size=32, patch_size=2, dim=192, depth=4, heads=8, mlp_ratio=2.0,
                 dropout=0.1):
        super().__init__()
        self.patch_embed = PatchEmbed(image_size, patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, dim))
        self.pos_drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=int(dim * mlp_ratio), dropout=dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)                                           # (B, N, dim)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)  # (B, N+1, dim)
        return self.pos_drop(x + self.pos_embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.tokens(x))[:, 0])             # class token -> (B, classes)


@register_model
def vit_tiny(num_classes: int = 10, image_size: int = 32, patch_size: int = 2, dim: int = 192, depth: int = 4,
             heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.1) -> nn.Module:
    return ViT(num_classes, image_size, patch_size, dim, depth, heads, mlp_ratio, dropout)
