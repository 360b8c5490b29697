"""ResNet-18 for 32x32 inputs, built from torchvision's: conv1 becomes a 3x3
stride-1 conv without bias, the stem maxpool is removed, fc is 512-10
(11,173,962 params). `stem_stride: 2` (the CPU demo's) strides that conv: the
same parameters, 16x16 maps after the stem, a quarter of the FLOPs."""
import types

import torch
from torch import nn

from reprozoo.errors import ConfigError
from reprozoo.models.registry import register_model

STEM_STRIDES = (1, 2)

# torchvision is imported where a model is built, not here: importing it pulls in
# torch._dynamo (~1.5 s), which every pipeline job that never builds a ResNet (most
# evaluate, verify, attention and samples jobs) would pay at start-up.


def cifar_stem(net: nn.Module, num_classes: int, stride: int = 1) -> nn.Module:
    """Adapt an ImageNet ResNet to 32x32 images, as the study does (stride 1)."""
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=stride, padding=1, bias=False)  # stride 1 keeps 32x32
    net.maxpool = nn.Identity()
    net.fc = nn.Linear(net.fc.in_features, num_classes)                            # 512 -> classes
    return net


def _plain_block_forward(self, x):
    """BasicBlock without its shortcut: conv-bn-relu-conv-bn-relu."""
    return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def remove_residuals(net: nn.Module) -> nn.Module:
    """The ablation: every block loses its identity/downsample shortcut (and the 1x1
    downsample convs, which exist only for the shortcut)."""
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            block.downsample = None
            block.forward = types.MethodType(_plain_block_forward, block)
    return net


def resnet_references(model: nn.Module, x: torch.Tensor, args: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Each of our stages beside torchvision's resnet18 with the same weights (the stem may be ours,
    so both start from its output). torchvision is the reference only with the residual connections:
    none for the ablation that removes them."""
    if not args.get("residual", True):
        return []
    from torchvision.models import resnet18 as tv_resnet18

    ref = tv_resnet18(weights=None, num_classes=model.fc.out_features).eval()
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("conv1.")}, strict=False)
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))  # the study's stem has no maxpool (Identity)
    outputs = []
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        ours = getattr(model, stage)(h)
        outputs.append((f"{stage} vs torchvision resnet18.{stage}", ours, getattr(ref, stage)(h)))
        h = ours
    outputs.append(("avgpool+fc vs torchvision", model.fc(torch.flatten(model.avgpool(h), 1)),
                    ref.fc(torch.flatten(ref.avgpool(h), 1))))
    return outputs


@register_model(reference=resnet_references)
def resnet18(num_classes: int = 10, residual: bool = True, stem_stride: int = 1) -> nn.Module:
    from torchvision.models import resnet18 as tv_resnet18

    if stem_stride not in STEM_STRIDES:
        raise ConfigError(f"stem_stride {stem_stride!r} for resnet18 is not one of {', '.join(map(str, STEM_STRIDES))}")
    net = cifar_stem(tv_resnet18(weights=None), num_classes, stem_stride)
    return net if residual else remove_residuals(net)
