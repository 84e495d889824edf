"""Conversion: what the graph rewrite inserts, what it folds, and what it refuses (with a clear error)."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sigmadelta
from sigmadelta import ConversionError
from sigmadelta.core.modules import Quantizer, SigmaDeltaLinear
from sigmadelta.testing import mlp, residual_cnn, vgg_style_cnn


def count_modules(net, cls):
    return sum(1 for n in net.graph_module.graph.nodes
               if n.op == "call_module" and isinstance(net.graph_module.get_submodule(n.target), cls))


def test_mlp_gets_one_quantizer_per_linear_layer_named_by_module_path():
    net = sigmadelta.convert(mlp((784, 200, 200, 10)), torch.zeros(1, 784))
    assert count_modules(net, Quantizer) == 3 and count_modules(net, SigmaDeltaLinear) == 3
    assert list(net.scales) == ["0", "2", "4"] and set(net.scales.values()) == {1.0}
    assert net.layer_inputs == {"0": "0", "2": "2", "4": "4"}


def test_batchnorm_is_folded_and_functional_convs_are_found():
    model = residual_cnn(channels=4)
    net = sigmadelta.convert(model, torch.zeros(1, 3, 8, 8))
    bn_nodes = [n for n in net.graph_module.graph.nodes
                if n.op == "call_module" and isinstance(net.graph_module.get_submodule(n.target), nn.BatchNorm2d)]
    assert bn_nodes == []
    # stem, 2 blocks x (expand, depthwise, project), head
    assert count_modules(net, SigmaDeltaLinear) == 8
    assert net.layers["blocks.0.depthwise"].conv_args["groups"] == 8
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)


def test_linear_feeding_linear_directly():
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3), nn.Conv1d(1, 2, 2)).eval()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m[2](self.m[1](self.m[0](x)).unsqueeze(1))

    net = sigmadelta.convert(Wrap().eval(), torch.zeros(1, 4))
    assert list(net.layers) == ["m.0", "m.1", "m.2"] and len(net.quantizers) == 3
    x = torch.rand(2, 4)
    torch.testing.assert_close(net(x), Wrap()(x))


def test_a_value_feeding_two_layers_shares_one_quantizer():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 3)

        def forward(self, x):
            return self.a(x) + self.b(x)

    net = sigmadelta.convert(TwoHeads().eval(), torch.zeros(1, 5))
    assert count_modules(net, Quantizer) == 1 and count_modules(net, SigmaDeltaLinear) == 2
    assert net.layer_inputs == {"a": "a", "b": "a"}
    net.set_mode("sigma-delta")
    net(torch.rand(2, 5))
    assert set(net.op_counts().per_layer("sigma_delta")) == {"a", "b"}


def test_functional_linear_and_conv_with_module_weights():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 3)
            self.fc = nn.Linear(4 * 6, 3)

        def forward(self, x):
            y = F.relu(F.conv1d(F.pad(x, (1, 1)), self.conv.weight, self.conv.bias))
            return F.log_softmax(F.linear(y.flatten(1), self.fc.weight, self.fc.bias), dim=-1)

    model = Functional().eval()
    net = sigmadelta.convert(model, torch.zeros(1, 2, 6))
    assert list(net.layers) == ["conv", "fc"]
    x = torch.rand(3, 2, 6)
    torch.testing.assert_close(net(x), model(x))


def test_conv_padding_modes_and_conv3d():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 5 * 5, 2)).eval()
    net = sigmadelta.convert(model, torch.zeros(1, 2, 5, 5))
    x = torch.rand(2, 2, 5, 5)
    torch.testing.assert_close(net(x), model(x))
    model3 = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.AdaptiveAvgPool3d(1), nn.Flatten()).eval()
    net3 = sigmadelta.convert(model3, torch.zeros(1, 1, 4, 4, 4))
    y = torch.rand(2, 1, 4, 4, 4)
    torch.testing.assert_close(net3(y), model3(y))


def test_per_channel_scales():
    net = sigmadelta.convert(vgg_style_cnn(3, (4, 4), size=8), torch.zeros(1, 3, 8, 8), per_channel_scales=True)
    scales = net.scales
    assert scales["0"].shape == (3, 1, 1) and scales["2"].shape == (4, 1, 1)
    assert scales["11"].shape == (16,)  # the first fully connected layer: one scale per input feature
    net.set_scales({"0": torch.tensor([1.0, 2.0, 4.0]).reshape(3, 1, 1)})
    assert net.scales["0"].flatten().tolist() == [1.0, 2.0, 4.0]


def test_training_mode_model_is_converted_in_eval_mode_with_a_warning_and_left_alone():
    model = vgg_style_cnn(3, (4, 4), size=8).train()
    with pytest.warns(UserWarning, match="training mode"):
        net = sigmadelta.convert(model, torch.zeros(1, 3, 8, 8))
    assert model.training  # the user's model is untouched
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model.eval()(x))  # dropout off in the converted net


def test_set_scales_checks_everything_first():
    net = sigmadelta.convert(mlp((4, 3, 2)), torch.zeros(1, 4))
    with pytest.raises(KeyError, match="no quantizer named 'nope'"):
        net.set_scales({"0": 2.0, "nope": 1.0})
    with pytest.raises(ValueError, match="must be finite and > 0"):
        net.set_scales({"0": 2.0, "2": -1.0})
    assert net.scales == {"0": 1.0, "2": 1.0}


# ---------------------------------------------------------------------------------------------------------
# refusals


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4))

    def forward(self, x):
        return self.body(x)


class BatchMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) - self.fc(x).mean(0)


class FixedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x.view(1, -1))


class SoftmaxOverBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=0)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


class ComputedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, 4))

    def forward(self, x):
        return F.linear(x, self.w * 2)


@pytest.mark.parametrize("model, match", [
    (WithLSTM(), r"unsupported op at node 'body_1' \(call_module body.1\) from module 'body.1'(.|\n)*Supported"),
    (BatchMean(), r"node 'mean' .* mixes the samples of a batch"),
    (FixedView(), r"node 'view' .* mixes the samples"),
    (SoftmaxOverBatch(), r"node 'softmax' .* dim=0"),
    (Branchy(), r"could not trace Branchy"),
    (ComputedWeight(), r"node 'linear' .* weight is computed at run time \(node 'mul'\)"),
    (nn.Sequential(nn.ReLU()), r"no linear op"),
])
def test_unsupported_models_are_refused_with_the_node_and_op(model, match):
    with pytest.raises(ConversionError, match=match):
        sigmadelta.convert(model.eval(), torch.zeros(1, 4))


def test_extra_ops_allow_a_custom_per_sample_module():
    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x) if x.dim() > 0 else x  # control flow: untraceable unless a leaf

    model = nn.Sequential(nn.Linear(4, 4), Swish(), nn.Linear(4, 2)).eval()
    with pytest.raises(ConversionError):
        sigmadelta.convert(model, torch.zeros(1, 4))
    net = sigmadelta.convert(model, torch.zeros(1, 4), extra_ops=[Swish])
    x = torch.rand(2, 4)
    torch.testing.assert_close(net(x), model(x))


def test_bad_example_input():
    with pytest.raises(ConversionError, match="floating-point tensor"):
        sigmadelta.convert(mlp((4, 2)), torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(ConversionError, match="running the model on example_input failed at node"):
        sigmadelta.convert(mlp((4, 2)), torch.zeros(1, 5))
