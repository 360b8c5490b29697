"""vit_tiny: the study's small ViT for 32x32 inputs (1,242,442 params).

Patch-2 conv embedding (256 tokens of dim 192), a zero-initialised class token
and learnable position embedding, dropout 0.1, 4 x torch's own
nn.TransformerEncoderLayer with its defaults (post-norm, ReLU) at 8 heads and
MLP ratio 2, then LayerNorm + linear on the class token.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.models.registry import register_model
from reprozoo.models.layers import PatchEmbed, patch_embed_reference


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


@torch.no_grad()
def class_token_attention(model: ViT, x: torch.Tensor) -> list[torch.Tensor]:
    """x (1, 3, H, W) normalised -> one (H/p, W/p) map per encoder layer: the class token's row
    of the layer's head-averaged attention weights over the patches (the report's figure)."""
    model.eval()
    h = model.tokens(x)                                                     # (1, N+1, dim)
    side = int((h.shape[1] - 1) ** 0.5)
    maps = []
    for layer in model.encoder.layers:
        _, weights = layer.self_attn(h, h, h, need_weights=True, average_attn_weights=True)  # (1, N+1, N+1)
        maps.append(weights[0, 0, 1:].reshape(side, side))
        h = layer(h)
    return maps


def encoder_layer_by_hand(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """Post-norm Transformer block written out by hand (batch-first, eval mode, ReLU)."""
    attn = layer.self_attn
    heads, (b, n, d) = attn.num_heads, x.shape
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    split = lambda t: t.view(b, n, heads, d // heads).transpose(1, 2)     # noqa: E731  (B, h, N, d/h)
    weights = torch.softmax(split(q) @ split(k).transpose(-2, -1) / math.sqrt(d // heads), dim=-1)
    a = (weights @ split(v)).transpose(1, 2).reshape(b, n, d)
    x = layer.norm1(x + F.linear(a, attn.out_proj.weight, attn.out_proj.bias))
    return layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))


def vit_references(model: ViT, x: torch.Tensor, args: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """The patch embedding, then each encoder block beside a fresh nn.TransformerEncoderLayer with
    copied weights and beside the block written out by hand."""
    outputs = [patch_embed_reference(model.patch_embed, x)]
    h = model.tokens(x)
    for i, layer in enumerate(model.encoder.layers):
        fresh = nn.TransformerEncoderLayer(layer.self_attn.embed_dim, layer.self_attn.num_heads,
                                           layer.linear1.out_features, batch_first=True).eval()
        fresh.load_state_dict(layer.state_dict())
        ours = layer(h)
        outputs.append((f"encoder.layers.{i} vs nn.TransformerEncoderLayer (copied weights)", ours, fresh(h)))
        outputs.append((f"encoder.layers.{i} vs functional reference", ours, encoder_layer_by_hand(layer, h)))
        h = ours
    return outputs


@register_model(attention=class_token_attention, reference=vit_references)
def vit_tiny(num_classes: int = 10, image_size: int = 32, patch_size: int = 2, dim: int = 192, depth: int = 4,
             heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.1) -> nn.Module:
    return ViT(num_classes, image_size, patch_size, dim, depth, heads, mlp_ratio, dropout)
