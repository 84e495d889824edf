"""Pure operators: run with `pytest tests/test_functional.py`."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from sigmadelta.functional import herding_quantize, integrate, round_ste, sigma_delta_encode, temporal_difference

# dyadic values (multiples of 1/64) keep every sum exact in float64, so the comparisons below can be exact
dyadic = st.integers(-640, 640).map(lambda n: n / 64)


@given(st.lists(st.lists(dyadic, min_size=3, max_size=3), min_size=1, max_size=30))
def test_integrate_inverts_temporal_difference(values):
    x = torch.tensor(values, dtype=torch.float64)  # (T, 3)
    d, last = temporal_difference(x, torch.zeros(3, dtype=torch.float64))
    y, total = integrate(d, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(y, x) and torch.equal(last, x[-1]) and torch.equal(total, x[-1])


@given(st.lists(dyadic, min_size=1, max_size=50))
def test_herding_quantizer_telescopes_and_equals_sigma_delta_encoding(values):
    x = torch.tensor(values, dtype=torch.float64).unsqueeze(1)  # (T, 1) increments
    s, phi = herding_quantize(x, torch.zeros(1, dtype=torch.float64))
    # Σ_τ s_τ = round(Σ_τ x_τ) at every step, and the residual stays within half a quantum
    assert torch.equal(s.cumsum(0), torch.round(x.cumsum(0)))
    assert phi.abs().item() <= 0.5
    # the network's encoding computes the same integers from the integrated signal
    s2, r, last = sigma_delta_encode(x.cumsum(0), torch.zeros(1, dtype=torch.float64))
    assert torch.equal(s, s2) and torch.equal(last, r[-1])


def test_herding_two_steps_by_hand():
    s, phi = herding_quantize(torch.tensor([[0.7], [0.6], [-1.0]]), torch.zeros(1))
    # φ: 0.7 → s=1, φ=-0.3; -0.3+0.6=0.3 → s=0, φ=0.3; 0.3-1.0=-0.7 → s=-1, φ=0.3
    assert s.flatten().tolist() == [1.0, 0.0, -1.0]
    assert torch.allclose(phi, torch.tensor([0.3]))


def test_round_ste_rounds_forward_and_passes_gradient():
    x = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 2.0, -2.0]  # half to even
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_temporal_difference_without_autograd_equals_the_differentiable_path():
    torch.manual_seed(0)
    x, last = torch.randn(5, 2, 3), torch.randn(2, 3)
    fast, fast_last = temporal_difference(x, last)  # no tensor requires grad: the one-pass path
    slow, _ = temporal_difference(x.clone().requires_grad_(), last)
    assert torch.equal(fast, slow.detach()) and torch.equal(fast_last, x[-1])
    assert slow.requires_grad  # and the differentiable path still carries the graph


def test_integrate_float32_increments_into_a_float64_state():
    torch.manual_seed(0)
    deltas = torch.randn(16, 4)  # float32
    total = torch.randn(4, dtype=torch.float64) * 1e3
    bias = torch.randn(4)
    y, new_total = integrate(deltas, total, offset=bias)
    exact = total + deltas.double().cumsum(0)  # (16, 4)
    assert y.dtype == torch.float32 and new_total.dtype == torch.float64
    # outputs: float32 rounding only (values ~1e3, float32 spacing there ~6e-5); the bias is not in the state
    assert (y.double() - (exact + bias.double())).abs().max().item() <= 16 * 1e-4
    assert (new_total - exact[-1]).abs().max().item() <= 16 * 1e-6  # float32 sums of 16 unit-size increments
    # equal dtypes: the frame-by-frame order, and offset added to the outputs only
    y64, total64 = integrate(deltas.double(), total, offset=bias.double())
    assert torch.equal(total64, integrate(deltas.double(), total)[1])
    assert torch.equal(y64, integrate(deltas.double(), total)[0] + bias.double())
