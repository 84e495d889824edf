"""The event engine on float32 models: ``python -m pytest tests/test_events_float32.py -q``.

In float32 the engine forms its messages and sums in float32 while the dense simulation forms its increments in
float64 (its default), so values differ by float32 rounding, and a unit whose ``k x`` lands within that rounding of
a level boundary can take the other level: a *flip*, one message sent by one computation and not the other.
Tolerances: outputs ``rtol=1e-4, atol=1e-5·max|out|`` with the same argmax, and at most one flip per 10,000
unit-frames (the toy models show none over 60 frames; ``benchmarks/results/events_*.json`` give the rate on the
real networks, ``message_mismatch``).
"""

import pytest
import torch

from sigmadelta.runtime.events.flips import message_mismatch
from test_events import MODELS, SCHEMES, clip_of, nets


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("name", list(MODELS))
def test_float32_within_float32_precision(name, scheme):
    dense, events, shape = nets(name, dtype=torch.float32, scheme=scheme)
    clip = clip_of(shape, steps=60, dtype=torch.float32)
    mismatch = message_mismatch(dense, events, clip, chunk=20)
    torch.testing.assert_close(mismatch["outputs"][1], mismatch["outputs"][0], rtol=1e-4,
                               atol=1e-5 * mismatch["outputs"][0].abs().max().item())
    assert torch.equal(mismatch["outputs"][1].argmax(-1), mismatch["outputs"][0].argmax(-1))
    assert mismatch["rate"] <= 1e-4, mismatch
