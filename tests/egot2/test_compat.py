"""egot2.compat: pytorchvideo's transforms import on current torchvision."""
import sys

from egot2.compat import import_pytorchvideo_transforms


def test_pytorchvideo_transforms_import_and_alias():
    transforms = import_pytorchvideo_transforms()
    assert transforms.__name__ == "pytorchvideo.transforms"
    assert hasattr(transforms, "ShortSideScale") and hasattr(transforms, "UniformTemporalSubsample")
    alias = sys.modules["torchvision.transforms.functional_tensor"]
    assert hasattr(alias, "resize") or hasattr(alias, "rgb_to_grayscale")
    assert import_pytorchvideo_transforms() is transforms  # idempotent
