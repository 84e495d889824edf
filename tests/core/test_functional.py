"""Pure operators: run with `pytest tests/core/test_functional.py`.

Exact comparisons here are exact by construction: dyadic inputs whose sums are exact in float64, or two paths that
perform the same correctly rounded operations in the same order. Where an implementation may choose its own order
(torch.cumsum), the comparison has a tolerance."""

import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from sigmadelta.core.functional import (herding_quantize, integrate, round_ste, running_sum, sigma_delta_encode,
                                        temporal_difference)

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
    # at an exact tie (a running sum k + 1/2) half-to-even rounding is not shift-invariant: round(2.5 - 1) = 2 but
    # round(2.5) - 1 = 1, so herding's φ and round(Σx) may pick different neighbours (e.g. x = [1, 1.5])
    assume(not bool(((x.cumsum(0) * 2) % 2 == 1).any()))
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
    assert torch.equal(fast, slow.detach())  # one correctly rounded subtraction per element either way and torch.equal(fast_last, x[-1])
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


def test_running_sum_adds_in_frame_order():
    torch.manual_seed(0)
    for frame, dtype in (((3,), torch.float64), ((64, 80), torch.float64), ((64, 80), torch.float32)):
        x, start = torch.randn(7, *frame, dtype=dtype), torch.randn(*frame, dtype=dtype)
        loop = [start + x[0]]
        for t in range(1, 7):
            loop.append(loop[-1] + x[t])
        if frame == (3,):  # small frames take torch.cumsum, whose order is the implementation's
            torch.testing.assert_close(running_sum(x, start), torch.stack(loop), rtol=1e-12, atol=1e-12)
        else:  # large frames: the same adds in the same order as the loop
            assert torch.equal(running_sum(x, start), torch.stack(loop)), (frame, dtype)
        torch.testing.assert_close(running_sum(x), running_sum(x, torch.zeros_like(start)),
                                   rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0)
    # small float32 frames: torch.cumsum, which accumulates wider and rounds each output once (to 1 ulp here)
    x, start = torch.randn(7, 3), torch.randn(3)
    torch.testing.assert_close(running_sum(x, start), (start.double() + x.double().cumsum(0)).float(),
                               rtol=1.2e-7, atol=1e-7)


def test_integrate_overwriting_its_input_gives_the_same_result():
    torch.manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        for frame in ((3,), (64, 80)):
            deltas, total = torch.randn(5, *frame, dtype=dtype), torch.randn(*frame, dtype=torch.float64)
            bias = torch.randn(*frame, dtype=dtype)
            y, new_total = integrate(deltas, total, bias)
            y2, new_total2 = integrate(deltas.clone(), total, bias, overwrite=True)
            assert torch.equal(y, y2) and torch.equal(new_total, new_total2), (dtype, frame)
