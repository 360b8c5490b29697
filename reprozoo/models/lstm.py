"""patch_lstm: the study's Patch-LSTM for 32x32 inputs (2,536,842 params).

Patch-2 conv embedding (256 tokens of dim 128) plus a learnable position
embedding (randn init), dropout 0.1, a 2-layer bidirectional nn.LSTM (hidden 256,
dropout 0.1) read at its last step, then LayerNorm(512), 512-256, GELU,
dropout, 256-10.
"""
import torch
from torch import nn

from reprozoo.models.registry import register_model
from reprozoo.models.layers import PatchEmbed, patch_embed_reference


class PatchLSTM(nn.Module):
    def __init__(self, num_classes=10, image_size=32, patch_size=2, dim=128, hidden=256, layers=2,
                 bidirectional=True, dropout=0.1):
        super().__init__()
        self.patch_embed = PatchEmbed(image_size, patch_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches, dim))
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
                           dropout=dropout if layers > 1 else 0.0)
        width = hidden * (2 if bidirectional else 1)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.patch_embed(x) + self.pos_embed)  # (B, N, dim)
        out, _ = self.rnn(x)                                  # (B, N, width)
        return self.head(out[:, -1])                          # last step -> (B, classes)


def lstm_references(model: PatchLSTM, x: torch.Tensor, args: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    return [patch_embed_reference(model.patch_embed, x)]


@register_model(reference=lstm_references)
def patch_lstm(num_classes: int = 10, image_size: int = 32, patch_size: int = 2, dim: int = 128, hidden: int = 256,
               layers: int = 2, bidirectional: bool = True, dropout: float = 0.1) -> nn.Module:
    return PatchLSTM(num_classes, image_size, patch_size, dim, hidden, layers, bidirectional, dropout)
