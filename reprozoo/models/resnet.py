"""ResNet-18 for 32x32 inputs, built from torchvision's: conv1 becomes a 3x3
stride-1 conv without bias, the stem maxpool is removed, fc is 512-10
(11,173,962 params)."""
from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from reprozoo.models import register_model


def cifar_stem(net: nn.Module, num_classes: int) -> nn.Module:
    """Adapt an ImageNet ResNet to 32x32 images, as the study does."""
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # keeps 32x32
    net.maxpool = nn.Identity()
    net.fc = nn.Linear(net.fc.in_features, num_classes)                            # 512 -> classes
    return net


@register_model
def resnet18(num_classes: int = 10) -> nn.Module:
    return cifar_stem(tv_resnet18(weights=None), num_classes)
