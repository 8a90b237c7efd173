"""The FLOP and all-reduce counts of `benchmarks/scaling_cost.py` against hand counts."""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scaling_cost():
    path = os.path.join(ROOT, "benchmarks", "scaling_cost.py")
    spec = importlib.util.spec_from_file_location("scaling_cost", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("scaling_cost", module)  # its dataclasses look the module up
    spec.loader.exec_module(module)
    return module


def test_step_cost_of_mlp_matches_hand_count_of_matmuls():
    from configs.toy_2d import get_config

    sc = _scaling_cost()
    hidden, embed, layers = 256, 128, 3

    def config():
        c = get_config()
        c.model.hidden, c.model.embed_dim, c.model.num_layers = hidden, embed, layers
        return c

    small, large = (sc.step_cost(config(), b, compile=False) for b in (64, 128))
    flops_per_example, _ = sc.per_example(small, large)
    # multiply-adds of one example's forward pass: time embedding (2 layers), input layer,
    # 2 per residual block, output layer (2-D data)
    forward = embed * hidden + hidden**2 + 2 * hidden + 2 * layers * hidden**2 + hidden * 2
    # the backward pass: weight gradients of every layer, input gradients of all but the
    # two whose inputs (the data, the sinusoidal embedding) need none
    input_grads = hidden**2 + 2 * layers * hidden**2 + hidden * 2
    hand = 2 * (2 * forward + input_grads)  # 2 FLOPs a multiply-add
    # the rest (activations, the loss) is elementwise, about 1% at this width
    assert abs(flops_per_example / hand - 1) < 0.05
    # the gradients (float32) and the loss are all that is all-reduced
    assert large.allreduce_bytes == 4 * large.params + 4
