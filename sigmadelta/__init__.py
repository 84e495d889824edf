"""sigmadelta: Sigma-Delta quantized networks on PyTorch.

Convert any pre-trained network into one whose layers send each other discretized *changes* of activation
(O'Connor & Welling, ICLR 2017), so that its work on video follows how much the input changes.

>>> import torch, sigmadelta
>>> model = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 784))
>>> _ = net.set_mode("sigma-delta")
"""

from .accounting import ENERGY_PJ, KINDS, OpCounts
from ._support import torch_threads
from .config import ConfigError, ScaleConfig
from .errors import ConversionError, SigmaDeltaError, StreamError
from .modules import MODES
from .net import SigmaDeltaNet, convert
from .optimize import History, optimize_scales, optimize_scales_sweep
from .allocation import BandAllocation, allocate_bands
from .scheme_search import SchemeSearch, learn_scheme_params
from . import runtime  # noqa: F401  registers the "sparse" backend

__version__ = "0.1.0"

__all__ = [
    "convert",
    "SigmaDeltaNet",
    "optimize_scales",
    "optimize_scales_sweep",
    "History",
    "learn_scheme_params",
    "SchemeSearch",
    "allocate_bands",
    "BandAllocation",
    "ScaleConfig",
    "ConfigError",
    "torch_threads",
    "data",
    "models",
    "OpCounts",
    "ConversionError",
    "StreamError",
    "SigmaDeltaError",
    "MODES",
    "KINDS",
    "ENERGY_PJ",
]


def __getattr__(name: str):
    import importlib

    # `sigmadelta.data` and `sigmadelta.models` load on first use: their readers (zarr, PyAV) are heavy
    if name in ("data", "models"):
        return importlib.import_module(f".{name}", __name__)
    if name == "video":  # the old name of sigmadelta.evaluation
        import warnings

        warnings.warn("sigmadelta.video is now sigmadelta.evaluation", DeprecationWarning, stacklevel=2)
        return importlib.import_module(".evaluation", __name__)
    raise AttributeError(f"module 'sigmadelta' has no attribute {name!r}")
