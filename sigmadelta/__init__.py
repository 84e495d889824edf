"""sigmadelta: Sigma-Delta quantized networks on PyTorch.

Convert any pre-trained network into one whose layers send each other discretized *changes* of activation
(O'Connor & Welling, ICLR 2017), so that its work on video follows how much the input changes.

>>> import torch, sigmadelta
>>> model = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 784))
>>> _ = net.set_mode("sigma-delta")

The package, by role (docs/architecture.md draws the layers): ``core`` (pure operators and the stateful modules),
``rewrite`` (tracing and conversion), ``runtime`` (execution backends), ``net`` (the converted network),
``accounting`` (op and energy counts), ``eval`` (running streams, agreement, reports, timing), ``files`` (scales
files, checkpoints), ``learn`` (scales, scheme parameters, band allocation, fine-tuning), ``data`` and ``models``
(offline data and pre-trained networks), ``paper`` (the experiments), ``cli`` (the ``sigmadelta`` command);
``config`` and ``recipes`` hold the settings and each model's defaults.
"""

from ._utils.threads import torch_threads
from .accounting import ENERGY_PJ, KINDS, OpCounts
from .config import FinetuneConfig, ScaleConfig, SchemeConfig
from .core.modules import MODES
from .errors import ConfigError, ConversionError, SigmaDeltaError, StreamError
from .learn.allocation import BandAllocation, allocate_bands, configure_scheme
from .learn.optimize import History, optimize_scales, optimize_scales_sweep
from .learn.scheme_search import SchemeSearch, learn_scheme_params
from .net import SigmaDeltaNet, convert

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
    "configure_scheme",
    "BandAllocation",
    "ScaleConfig",
    "SchemeConfig",
    "FinetuneConfig",
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
    raise AttributeError(f"module 'sigmadelta' has no attribute {name!r}")
