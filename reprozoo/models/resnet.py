"""ResNet-18 for 32x32 inputs, built from torchvision's: conv1 becomes a 3x3
stride-1 conv without bias, the stem maxpool is removed, fc is 512-10
(11,173,962 params)."""
import types

from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from reprozoo.models import register_model


def cifar_stem(net: nn.Module, num_classes: int) -> nn.Module:
    """Adapt an ImageNet ResNet to 32x32 images, as the study does."""
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # keeps 32x32
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


@register_model
def resnet18(num_classes: int = 10, residual: bool = True) -> nn.Module:
    net = cifar_stem(tv_resnet18(weights=None), num_classes)
    return net if residual else remove_residuals(net)
