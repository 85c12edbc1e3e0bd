"""Misuse is named, never silently accepted: a plain ``loss.backward()``, a loss with no path
to h, a diverging state reported as bad targets, integer input, a device option."""

import pytest
import torch
from torch import nn

from sparse_rtrl import DivergenceError, InputError, OnlineLearner
from sparse_rtrl.cells import FunctionalCell
from sparse_rtrl.errors import ConfigurationError
from sparse_rtrl.transport import RULES, unsupported_reason

from conftest import make_cell
from rule_cases import EXAMPLES

RULE_CASES = [(name, EXAMPLES[name][0]) for name in sorted(RULES)]
IDS = [name for name, _ in RULE_CASES]


def usable(name, options):
    cell = make_cell("vanilla")
    if unsupported_reason(name, cell, **options) is not None:
        pytest.skip(f"{name} does not serve the vanilla cell")
    return cell, OnlineLearner(cell, name, **options)


@pytest.mark.parametrize("name,options", RULE_CASES, ids=IDS)
def test_a_loss_with_no_path_to_h_raises_and_names_the_fix(name, options):
    cell, learner = usable(name, options)
    readout = nn.Linear(cell.hidden_size, 1).double()
    x = torch.randn(3, dtype=torch.float64)
    h = learner.step(x)
    with pytest.raises(InputError, match=r"no path to the h returned by step\(\).*h.detach\(\)"):
        learner.backward(readout(h.detach()).pow(2).sum())
    assert all(p.grad is None for p in cell.parameters())  # the cell got nothing, not zeros
    assert readout.weight.grad is not None  # as the message says
    learner.backward(readout(h).pow(2).sum())  # the right call still works on the same step
    assert all(p.grad is not None for p in cell.parameters())


@pytest.mark.parametrize("name,options", RULE_CASES, ids=IDS)
def test_a_plain_loss_backward_is_named_at_the_next_call(name, options):
    cell, learner = usable(name, options)
    if learner.output_carries_graph:
        pytest.skip("a window rule's h carries its graph: plain loss.backward() is exact there")
    x = torch.randn(3, dtype=torch.float64)
    h = learner.step(x)
    h.pow(2).sum().backward()  # the mistake: the cell's parameters get nothing
    assert all(p.grad is None for p in cell.parameters())
    state = learner.state.clone()
    with pytest.raises(InputError, match=r"loss of step 0 was back-propagated with loss.backward\(\).*learner.backward\(loss\)"):
        learner.step(x)
    assert torch.equal(learner.state, state) and learner.steps == 1  # nothing changed
    h = learner.step(x)  # said once; the stream goes on
    learner.backward(h.pow(2).sum())
    assert all(p.grad is not None for p in cell.parameters())
    h = learner.step(x)
    h.pow(2).sum().backward()
    with pytest.raises(InputError, match=r"loss.backward\(\).*learner.backward"):
        learner.backward(h.pow(2).sum())  # caught at backward too, not as "an earlier step"


def exploding_cell(dtype):
    """s' = 10⁴·s + x: finite for a while, then a loss of it overflows before the state does."""
    params = {"a": torch.tensor([1e4], dtype=dtype)}
    return FunctionalCell(lambda p, s, x: p["a"] * s + x, params, input_size=1, state_size=1)


@pytest.mark.parametrize("name", ["full", "immediate", "tbptt"])
def test_a_state_that_overflows_the_loss_is_divergence_not_bad_targets(name):
    learner = OnlineLearner(exploding_cell(torch.float32), name)
    x = torch.ones(1)
    with pytest.raises(DivergenceError, match=r"the loss became non-finite.*max \|h\| = 1e\+2\d"):
        for _ in range(10):
            h = learner.step(x)
            assert torch.isfinite(h).all()
            learner.backward(h.pow(2).sum())
    # a moderate state with a NaN target is the user's input, as before
    learner = OnlineLearner(make_cell("vanilla"), name)
    h = learner.step(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(InputError, match=r"NaN or inf; nothing was accumulated. The state is moderate"):
        learner.backward((h - float("nan")).pow(2).sum())


def test_integer_input_names_a_conversion_of_the_input():
    learner = OnlineLearner(make_cell("vanilla"), "full")
    with pytest.raises(InputError, match=r"torch.int64 is not a floating-point type: convert the input with x.to\(torch.float64\)"):
        learner.step(torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("option", ["device", "dtype"])
def test_device_or_dtype_options_name_moving_the_cell(option):
    with pytest.raises(ConfigurationError, match=rf"no {option} option: the learner follows its cell.*cell.to"):
        OnlineLearner(make_cell("vanilla"), "full", **{option: "cpu" if option == "device" else torch.float32})


def test_the_transformer_keeps_the_same_contract():
    """The online transformer shares the learner base: the same misuse is named the same way."""
    from sparse_rtrl.contract import AbstractOnlineLearner
    from sparse_rtrl.transformer import OnlineTransformer

    learner = OnlineTransformer(2, 1, d_model=12, heads=3, window=4, seed=0).double()
    assert isinstance(learner, AbstractOnlineLearner)
    assert isinstance(OnlineLearner(make_cell("vanilla")), AbstractOnlineLearner)
    x = torch.randn(2, dtype=torch.float64)
    y = learner.step(x)
    with pytest.raises(InputError, match=r"no path to the prediction returned by step\(\)"):
        learner.backward(y.detach().pow(2).sum() + 0 * learner.model.embed.weight.sum())
    y = learner.step(x)
    y.pow(2).sum().backward()
    with pytest.raises(InputError, match=r"loss.backward\(\).*learner.backward\(loss\)"):
        learner.step(x)
    with pytest.raises(InputError, match="torch.int64 is not a floating-point type"):
        learner.step(torch.zeros(2, dtype=torch.int64))


def test_reset_state_after_moving_the_cell_lets_the_stream_go_on():
    """The error for a cell moved mid-stream says to call reset_state(); doing so works."""
    cell = make_cell("vanilla").float()
    learner = OnlineLearner(cell, "full")
    learner.backward(learner.step(torch.zeros(3)).sum())
    cell.double()
    with pytest.raises(InputError, match=r"moved to another device or dtype mid-stream: call reset_state\(\)"):
        learner.step(torch.zeros(3, dtype=torch.float64))
    learner.reset_state()
    h = learner.step(torch.ones(3, dtype=torch.float64))
    assert h.dtype == torch.float64 and learner.influence().dtype == torch.float64


def test_a_failed_window_backward_leaves_the_gradients_as_they_were():
    """An error inside autograd (here: the window's graph already freed) must not leave the
    zeroed .grad the window backward sets up: a caught error followed by an optimizer step
    would otherwise move Adam by momentum on phantom zeros."""
    cell = make_cell("vanilla")
    learner = OnlineLearner(cell, "tbptt", window=3)
    h = learner.step(torch.randn(3, dtype=torch.float64))
    loss = h.pow(2).sum()
    learner.backward(loss)
    grads = [p.grad.clone() for p in cell.parameters()]
    for p in cell.parameters():
        p.grad = None
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        learner.backward(loss)
    assert all(p.grad is None for p in cell.parameters())
    assert all(torch.isfinite(g).all() for g in grads)
