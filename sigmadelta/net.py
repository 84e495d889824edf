"""The converted network: one module that runs as each of the paper's four networks, frame by frame or clip
by clip, and counts its operations.

>>> import torch, sigmadelta
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 4))
>>> _ = net.set_mode("sigma-delta")
>>> clip = torch.rand(5, 1, 4)                      # (T, B, features)
>>> net.run(clip).shape
torch.Size([5, 1, 2])
>>> net.op_counts().steps
5
>>> net.reset(); net.per_step_counts = "total"      # keep counts per step too (off by default: bounded memory)
>>> _ = net.run(clip); net.op_counts().per_step("sigma_delta").shape
(5,)
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping

import torch
import torch.fx as fx
from torch import nn
from torch.utils._pytree import tree_map

from ._utils.checks import log_scale, per_quantizer, stream_input
from .accounting import PER_STEP, OpCounter, OpCounts
from .config import SchemeConfig
from .core.functional import HYSTERESIS, SCHEMES, SIGMA_DELTA_SCHEME, THRESHOLD
from .core.modules import MODES, ORIGINAL, SIGMA_DELTA, Observation, Quantizer, SigmaDeltaLinear
from .rewrite.graph import rewrite
from .runtime import registry as backends

__all__ = ["SigmaDeltaNet", "convert", "SCHEMES"]

_KEEP = object()  # configured(per_step_counts=...) left out: None is a value of that setting


def convert(model: nn.Module, example_input: torch.Tensor, *, per_channel_scales: bool = False,
            extra_ops=(), scheme: str = SIGMA_DELTA_SCHEME, **scheme_params) -> "SigmaDeltaNet":
    """Convert any eval-mode PyTorch model into a :class:`SigmaDeltaNet`.

    The model is traced with ``torch.fx`` (a deep copy: the model passed in is never changed). Every linear
    op (``nn.Linear``, ``nn.Conv1d/2d/3d`` and subclasses, ``F.linear``, ``F.conv*d`` with a parameter as
    weight) gets a quantizer with a learnable scale on its input; a BatchNorm right after a linear op is
    folded into it; every other op must be a known per-sample op, or conversion fails with a
    :class:`~sigmadelta.ConversionError` naming the node, the op, the module it came from and the supported
    ops. A model in training mode is converted in eval mode, with a warning.

    Args:
        model: the network; its forward takes one tensor ``[batch, ...]`` and returns one tensor.
        example_input: a floating-point input ``[batch, ...]``; fixes the frame shape and dtype.
        per_channel_scales: one scale per input channel instead of the paper's one per layer.
        extra_ops: further per-sample ops to allow: module classes (also kept as opaque leaves when tracing),
            functions, or tensor method names. Only list ops that treat each sample on its own and hold no
            linear layer: those would run unquantized and uncounted.
        scheme, scheme_params: the delta scheme of the sigma-delta mode and its parameters
            (:meth:`SigmaDeltaNet.set_scheme`).

    Returns:
        The converted network, in ``"original"`` mode.
    """
    net = SigmaDeltaNet(rewrite(model, example_input, per_channel_scales=per_channel_scales, extra_ops=extra_ops))
    if scheme != SIGMA_DELTA_SCHEME or scheme_params:
        net.set_scheme(scheme, **scheme_params)
    return net


class SigmaDeltaNet(nn.Module):
    """A converted network. Build it with :func:`convert`.

    Modes (:meth:`set_mode`): ``"original"``, ``"temporal-difference"``, ``"rounding"``, ``"sigma-delta"``.

    - Streaming: ``net(x_t)`` takes one time step ``[B, ...]`` of ``B`` independent streams and keeps state.
    - Clip: ``net.run(clip)`` takes ``[T, B, ...]`` and returns ``[T, B, ...]``, computed in parallel over time,
      continuing from (and updating) the same state, so clips can be chained.
    - :meth:`reset` returns every state to zero and clears the op counts. Changing the mode resets.

    In float64 the temporal-difference network equals the original and the sigma-delta network the rounding
    network to ~1e-9 over long streams. In a float32 model the delta paths compute their increments in float64
    by default, and outputs agree with the dense paths to float32 precision, except that a value within float32
    noise of a rounding boundary occasionally rounds the other way, so a few units differ by one quantization
    step ``1/k``. ``set_delta_dtype(torch.float32)`` computes them in float32 instead: about 2x faster for CNNs on
    the CPU, with float32 rounding in every increment, hence more such flips over long streams. Convert a
    float64 model where exact equality matters.
    """

    def __init__(self, result):
        super().__init__()
        self.graph_module: fx.GraphModule = result.graph_module
        self._layers: dict[str, SigmaDeltaLinear] = result.layers
        self._quantizers: dict[str, Quantizer] = result.quantizers
        self.layer_inputs: dict[str, str] = result.layer_inputs
        self.sample_shape: tuple[int, ...] = result.sample_shape
        self.dtype: torch.dtype = result.dtype
        self._counter = OpCounter(self._layers, self._quantizers, self.layer_inputs)
        self._stateful = [m for m in self.graph_module.modules() if isinstance(m, (Quantizer, SigmaDeltaLinear))]
        self.counting = True  # count ops on every call; turn off for speed when counts are not wanted
        self.mode = ORIGINAL
        self.delta_dtype: torch.dtype = torch.float64
        self.backend = "dense"
        self._engine = None  # the engine of the last non-dense backend set (kept while the net runs dense)
        self._engine_name: str | None = None
        self._batch_size: int | None = None
        self._scheme = SchemeConfig()  # as set; the values live in the quantizers

    # ----------------------------------------------------------------------------------------------------
    # structure

    @property
    def layers(self) -> dict[str, SigmaDeltaLinear]:
        """Layer name -> its linear module, in graph order."""
        return dict(self._layers)

    @property
    def quantizers(self) -> dict[str, Quantizer]:
        """Quantizer name (the first layer it feeds) -> module, in graph order."""
        return dict(self._quantizers)

    @property
    def scales(self) -> dict[str, float | torch.Tensor]:
        """Quantizer name -> its scale ``k`` (a float, or a tensor for per-channel scales)."""
        return {name: (q.scale.item() if q.log_scale.dim() == 0 else q.scale.detach().clone())
                for name, q in self._quantizers.items()}

    def set_scales(self, scales: Mapping[str, float | torch.Tensor]) -> None:
        """Set scales by quantizer name; names not given keep their scale. Checks everything before changing any.

        Resets state and op counts: a stream's integrated state holds increments quantized with the old scales.

        Raises:
            KeyError: an unknown quantizer name.
            TypeError: ``scales`` is not a mapping, or a value is not a real number or a tensor/list of them
                (the message names the key and the type given).
            ValueError: a value of the wrong shape, not finite, not > 0, or outside the scale dtype's range.
        """
        if not isinstance(scales, Mapping):
            raise TypeError(f"set_scales takes a mapping quantizer name -> k, got {type(scales).__name__}")
        updates = {}
        for name, k in scales.items():
            if name not in self._quantizers:
                raise KeyError(f"no quantizer named {name!r}; the scales are {list(self._quantizers)}")
            updates[name] = log_scale(name, k, self._quantizers[name].log_scale)
        with torch.no_grad():
            for name, log_k in updates.items():
                self._quantizers[name].log_scale.copy_(log_k)
        self.reset()

    # ----------------------------------------------------------------------------------------------------
    # delta scheme

    @property
    def scheme(self) -> str:
        """The delta scheme of the sigma-delta mode: ``"sigma-delta"``, ``"hysteresis"`` or ``"threshold"``."""
        return self._scheme.name

    @property
    def scheme_params(self) -> dict[str, float]:
        """Quantizer name -> its scheme parameter (h for hysteresis, θ for threshold, 0 for sigma-delta)."""
        return {name: q.scheme_param for name, q in self._quantizers.items()}

    @property
    def scheme_config(self) -> SchemeConfig:
        """The scheme set, as a :class:`~sigmadelta.config.SchemeConfig` with every quantizer's value."""
        return self._scheme.replace(values=self.scheme_params)

    def set_scheme(self, scheme: str | SchemeConfig, *, h: float | Mapping[str, float] = 0.5,
                   theta: float | Mapping[str, float] | None = None, tau: float | None = None,
                   calibration: torch.Tensor | None = None) -> "SigmaDeltaNet":
        """Choose how the sigma-delta mode forms its messages (:mod:`sigmadelta.core.functional`), in every quantizer:

        - ``"sigma-delta"``: the paper's, ``L = round(k x)``;
        - ``"hysteresis"``: a level moves only when ``k x`` is ``0.5 + h`` or more from it (``h`` one value or
          one per quantizer name; ``h = 0`` is the paper's network exactly);
        - ``"threshold"``: the peers' thresholded deltas, a full-precision reference per unit moved where the
          input is more than θ from it; θ given (one value or per quantizer), or ``tau`` times the standard
          deviation of each quantizer's input over the frames ``calibration [T, B, ...]`` (:meth:`input_std`).

        ``scheme`` may also be a :class:`~sigmadelta.config.SchemeConfig`: its ``values`` per quantizer if it has
        them, else its ``param`` as ``h`` or ``tau`` (with ``calibration``). Its ``allocate_bands`` is what
        :func:`sigmadelta.learn.allocation.configure_scheme` acts on; here it is only recorded.

        Checks everything before changing anything. Resets state and op counts. Returns the network.
        """
        if isinstance(scheme, SchemeConfig):
            config = scheme
            if config.values is not None:
                keyword = {HYSTERESIS: "h", THRESHOLD: "theta"}.get(config.name)
                given = {keyword: config.values} if keyword else {}
            else:
                given = {HYSTERESIS: {"h": config.param}, THRESHOLD: {"tau": config.param}}.get(config.name, {})
            return self._set_scheme(config.name, config, calibration=calibration, **given)
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; choose from {SCHEMES}")
        uniform = {HYSTERESIS: h, THRESHOLD: tau if theta is None else theta}.get(scheme, 0.0)
        param = float(uniform) if isinstance(uniform, (int, float)) else 0.0
        return self._set_scheme(scheme, SchemeConfig(scheme, param), h=h, theta=theta, tau=tau,
                                calibration=calibration)

    def _set_scheme(self, scheme: str, config: SchemeConfig, *, h=0.5, theta=None, tau=None,
                    calibration=None) -> "SigmaDeltaNet":
        names = list(self._quantizers)
        if scheme == HYSTERESIS:
            params = per_quantizer(h, names, "h")
        elif scheme == THRESHOLD:
            if (theta is None) == (tau is None and calibration is None):
                raise ValueError("threshold scheme: give theta, or tau with calibration frames (not both)")
            if theta is None:
                if tau is None or calibration is None:
                    raise ValueError("threshold scheme: tau needs calibration frames [T, B, ...] and vice versa")
                stds = self.input_std(calibration)
                params = {name: float(tau) * std for name, std in stds.items()}
            else:
                params = per_quantizer(theta, names, "theta")
        else:
            params = dict.fromkeys(names, 0.0)
        for name, p in params.items():
            if not (0 <= p < math.inf):
                raise ValueError(f"{scheme} parameter of quantizer {name!r} must be finite and >= 0, got {p}")
        for name, q in self._quantizers.items():
            q.set_scheme(scheme, params[name])
        self._scheme = config.replace(values=None)
        self.reset()
        return self

    @torch.no_grad()
    def input_std(self, frames: torch.Tensor, chunk: int = 8) -> dict[str, float]:
        """Quantizer name -> standard deviation of its input (the original network's activation) over all units
        and frames of the clip ``frames [T, B, ...]``, run ``chunk`` frames at a time on a copy of this network
        in the original mode (this network is unchanged)."""
        self._check(frames, "calibration clip", 2)
        probe = self.dense_copy(ORIGINAL)
        sums = {name: torch.zeros(3, dtype=torch.float64) for name in probe._quantizers}  # n, Σx, Σx²
        for start in range(0, len(frames), chunk):
            probe.run(frames[start:start + chunk])
            for name, q in probe._quantizers.items():
                x = q.observation.x.double()
                sums[name] += torch.stack([torch.tensor(float(x.numel()), dtype=torch.float64), x.sum(), x.square().sum()])
        return {name: math.sqrt(max(float(sq / n - (sx / n) ** 2), 0.0) * n / max(n - 1, 1))
                for name, (n, sx, sq) in ((name, v.tolist()) for name, v in sums.items())}

    def dense_copy(self, mode: str) -> "SigmaDeltaNet":
        """A copy with state of its own, on the dense backend (no engine copied), in ``mode``, not counting: to
        run beside this network (the reference of an evaluation, a probe) without touching it."""
        other = copy.deepcopy(self, {id(self._engine): None})
        other._engine, other._engine_name, other.backend, other.counting = None, None, backends.DENSE, False
        return other.set_mode(mode)

    def observations(self) -> dict[str, Observation]:
        """Quantizer name -> what it saw and sent in the last call (:class:`~sigmadelta.core.modules.Observation`:
        ``x``, the real input; ``r``, ``round(k x)``; ``s``, the messages), in graph order. The op counter, scale
        learning and the evaluation read the network through this."""
        missing = [name for name, q in self._quantizers.items() if q.observation is None]
        if missing:
            raise RuntimeError(f"no observation yet for quantizers {missing[:4]}: run the network first")
        return {name: q.observation for name, q in self._quantizers.items()}

    def scale_parameters(self):
        """The learnable log-scales κ (``k = exp(κ)``), in graph order: what scale optimisation trains."""
        return [q.log_scale for q in self._quantizers.values()]

    # ----------------------------------------------------------------------------------------------------
    # mode and state

    def set_mode(self, mode: str) -> "SigmaDeltaNet":
        """Choose the network: ``"original"``, ``"temporal-difference"``, ``"rounding"`` or ``"sigma-delta"``.

        Resets state and op counts. Returns the network.
        """
        if mode not in MODES:
            hint = (f" (modes are spelled with hyphens, {mode.replace('_', '-')!r}; op kinds with underscores)"
                    if isinstance(mode, str) and mode.replace("_", "-") in MODES else "")
            raise ValueError(f"unknown mode {mode!r}{hint}; choose from {MODES}")
        self.mode = mode
        for m in self._stateful:
            m.mode = mode
        self.reset()
        return self

    def set_delta_dtype(self, dtype: torch.dtype) -> "SigmaDeltaNet":
        """The dtype in which the temporal-difference and sigma-delta paths compute their increments (the
        differences and ``W m``): ``torch.float64`` (the default: the closest simulation of exact arithmetic), or
        any floating dtype at least as wide as the model's, e.g. the model's own ``torch.float32`` (the fastest:
        float64 convolutions take a slow path on the CPU). Running sums carried from call to call are float64
        either way, so nothing drifts. Resets state and op counts. Returns the network.
        """
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point) or (
                torch.finfo(dtype).bits < torch.finfo(self.dtype).bits):
            raise ValueError(f"delta dtype must be a floating-point dtype at least as wide as the model's "
                             f"{self.dtype}, got {dtype}")
        self.delta_dtype = dtype
        for q in self._quantizers.values():
            q.delta_dtype = dtype
        self.reset()
        return self

    def set_backend(self, backend: str) -> "SigmaDeltaNet":
        """How the sigma-delta mode executes: ``"dense"`` (the exact simulation, the reference) or a registered
        backend (:mod:`sigmadelta.runtime.registry`; ``"events"``, :mod:`sigmadelta.runtime.events`: work follows the
        nonzero quantized deltas). Other modes always run dense. Resets state and op counts. Returns the network.
        """
        factory = backends.backend_factory(backend)  # a ValueError naming the registered ones
        if factory is not None and self._engine_name != backend:
            self._engine, self._engine_name = factory(self), backend
        self.backend = backend
        self.reset()
        return self

    @contextlib.contextmanager
    def configured(self, *, mode: str | None = None, counting: bool | None = None, backend: str | None = None,
                   delta_dtype: torch.dtype | None = None, noise: str | None = None,
                   per_step_counts=_KEEP) -> Iterator["SigmaDeltaNet"]:
        """Run a block with some settings changed, then restore every one of them, also on error.

        ``mode``, ``backend`` and ``delta_dtype`` as their setters (each change resets state and op counts, so
        leaving the block resets too when one of them was given); ``counting``: count ops on each call;
        ``noise``: ``"uniform"`` makes every quantizer add ``U(−½, ½)`` to ``k·x`` instead of rounding (scale
        learning with noise), ``"round"`` is the normal network; ``per_step_counts`` as the property (here
        ``None`` turns per-step counts off; leave it out to keep the setting). Settings left ``None`` are not
        touched.

        >>> import torch, sigmadelta
        >>> net = sigmadelta.convert(torch.nn.Linear(3, 2).eval(), torch.zeros(1, 3))
        >>> with net.configured(mode="rounding", counting=False):
        ...     net.mode, net.counting
        ('rounding', False)
        >>> net.mode, net.counting
        ('original', True)
        """
        noises = {q: q.noise for q in self._quantizers.values()}
        saved = dict(mode=self.mode, backend=self.backend, delta_dtype=self.delta_dtype)
        changes = {k: v for k, v in dict(mode=mode, backend=backend, delta_dtype=delta_dtype).items()
                   if v is not None and v != saved[k]}
        saved_counting, saved_per_step = self.counting, self.per_step_counts
        if noise not in (None, "round", "uniform"):
            raise ValueError(f"unknown noise {noise!r}; choose from ('round', 'uniform')")
        if per_step_counts is not _KEEP and per_step_counts not in PER_STEP:
            raise ValueError(f"per_step_counts must be one of {PER_STEP}, got {per_step_counts!r}")
        try:
            self._apply(changes)
            if counting is not None:
                self.counting = counting
            if per_step_counts is not _KEEP:
                self.per_step_counts = per_step_counts
            for q in self._quantizers.values():
                q.noise = noises[q] if noise is None else noise
            yield self
        finally:
            for q, n in noises.items():
                q.noise = n
            self.counting, self.per_step_counts = saved_counting, saved_per_step
            self._apply({k: saved[k] for k in changes})

    def _apply(self, settings: dict) -> None:
        setters = dict(mode=self.set_mode, backend=self.set_backend, delta_dtype=self.set_delta_dtype)
        for name, value in settings.items():
            setters[name](value)

    @property
    def engine(self):
        """The engine of the last non-dense backend set (e.g. :class:`sigmadelta.runtime.events.EventEngine`
        after ``set_backend("events")``), else ``None``: its tuning and diagnostics."""
        return self._engine

    def reset(self) -> None:
        """Return every state to zero (the start of a new stream) and clear the op counts."""
        for m in self._stateful:
            m.reset()
        if self._engine is not None:
            self._engine.reset()
        self._counter.reset()
        self._batch_size = None

    def op_counts(self) -> OpCounts:
        """Operation counts of the steps run since the last :meth:`reset`: totals per layer and kind, and per-step
        counts as :attr:`per_step_counts` asks."""
        return self._counter.counts()

    @property
    def per_step_counts(self) -> str | None:
        """What op counting keeps per step besides its running totals (which take bounded memory on any stream):
        ``None`` (the default) nothing, ``"total"`` each kind per step summed over layers (a few numbers a step;
        :meth:`OpCounts.per_step`), ``"layer"`` per layer and step (:meth:`OpCounts.per_layer_step`). Set it
        before a stream: steps run before it was set have no per-step record. Survives :meth:`reset`."""
        return self._counter.per_step

    @per_step_counts.setter
    def per_step_counts(self, what: str | None) -> None:
        self._counter.set_per_step(what)

    # ----------------------------------------------------------------------------------------------------
    # running

    def forward(self, x: torch.Tensor):
        """One time step: ``x`` is ``[B, ...]``; returns the model's output ``[B, ...]``."""
        self._check(x, "frame", 1)
        return tree_map(lambda t: t[0], self._run(x.unsqueeze(0)))

    def run(self, clip: torch.Tensor):
        """A clip of ``T`` steps: ``[T, B, ...]`` in, ``[T, B, ...]`` out, all steps computed at once."""
        self._check(clip, "clip", 2)
        return self._run(clip)

    def prepare_steps(self, steps: int) -> None:
        """Tell every stateful module that the next call of :attr:`graph_module` carries ``steps`` frames per
        stream (what :meth:`run` does before its call), for loops that call the graph module themselves, e.g.
        through a DDP wrapper. Such a call stages state without committing it: :meth:`reset` after it."""
        for m in self._stateful:
            m.steps = steps

    def _check(self, x, what: str, lead: int) -> None:
        """Refuse bad input before any state is touched (:func:`~sigmadelta._utils.checks.stream_input`)."""
        stream_input(x, what, lead, self.sample_shape, self.dtype, self._batch_size)

    def _run(self, clip: torch.Tensor):
        steps, batch = clip.shape[:2]
        if self.backend != backends.DENSE and self.mode == SIGMA_DELTA:
            out = self._engine.run(clip)  # [T, B, ...]; the engine validates nothing: _check did
            self._batch_size = batch
            if self.counting:  # the engine left the quantizers' records as the dense path does
                self._counter.update(steps, batch)
            return out
        self.prepare_steps(steps)
        try:
            out = self.graph_module(clip.flatten(0, 1))  # (T·B, ...): time-major frames of B streams
        except Exception:
            for m in self._stateful:
                m.discard()
            raise
        for m in self._stateful:
            m.commit()
        self._batch_size = batch
        if self.counting:
            self._counter.update(steps, batch)
        return tree_map(lambda t: t.unflatten(0, (steps, batch)), out)

    def extra_repr(self) -> str:
        n_scales = sum(math.prod(q.log_scale.shape) for q in self._quantizers.values())
        return f"mode={self.mode!r}, layers={len(self._layers)}, scales={n_scales}, sample_shape={self.sample_shape}"
