"""A rule and a cell written in user code plug into the registries, and from there into the
learner, the experiments' model builder and the shared test suites, with no change to the
package (docs/architecture.md, "Adding a rule" / "Adding a cell").

The toy rule and cell are in tests/toys.py. Registered before collection (e.g. by a pytest
plugin that calls ``register_cell``/``register``), they are also parametrized into every suite
that reads the registries; here the suites' checks run on them by hand."""

import pytest
import torch

from sparse_rtrl import OnlineLearner
from sparse_rtrl.cells import CELLS, StepDerivatives, register_cell
from sparse_rtrl.experiments import Experiment, Method
from sparse_rtrl.experiments.models import build_model
from sparse_rtrl.experiments.pretraining import pretrain
from sparse_rtrl.tasks import make_task
from sparse_rtrl.transport import RULES, register

import rule_cases
import test_cells
import test_contract
import test_every_shape
import test_exactness
from conftest import make_cell
from toys import HalfTrace, SinRNN


@pytest.fixture
def plugged(monkeypatch):
    """The toy rule and cell registered as user code would (undone after the test)."""
    monkeypatch.setitem(RULES, HalfTrace.name, HalfTrace)
    monkeypatch.setitem(CELLS, SinRNN.name, SinRNN)
    assert register(HalfTrace) is HalfTrace and register_cell(SinRNN) is SinRNN


def run(cell, rule, **options):
    learner = OnlineLearner(cell, rule, **options)
    xs = torch.randn(7, 2, cell.input_size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for x in xs:
        learner.backward(learner.step(x).pow(2).sum())
    return [p.grad.clone() for p in cell.parameters()]


def test_a_registered_rule_learns_by_name_as_its_recursion_says(plugged):
    for kind in ("vanilla", "lstm", SinRNN.name):
        toy = run(make_cell(kind, seed=1), HalfTrace.name)
        trace = run(make_cell(kind, seed=1), "trace", decay=0.5)  # the same recursion, independently
        for a, b in zip(toy, trace):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_the_cell_suites_take_the_new_cell(plugged):
    # the cell suites parametrize over CELLS (conftest.CELL_KINDS); a cell registered before
    # collection is a kind of each of them; here they run on it by hand
    toy = SinRNN.name
    test_cells.test_closed_form_derivatives_match_autodiff_of_torch_cell(toy)
    test_cells.test_ensemble_member_derivatives_equal_solo(toy)
    test_exactness.test_full_rtrl_equals_bptt_of_torch_cell(toy)
    test_exactness.test_sparse_with_all_paths_equals_full(toy, "row")
    test_exactness.test_sparse_with_no_paths_equals_immediate(toy)
    for ensemble, shape in ((False, "(B,I)"), (True, "(E,B,I)")):
        for dtype in (torch.float64, torch.float32):
            test_every_shape.test_rule_equals_its_definition_for_every_input_shape(("full", {}), toy, shape,
                                                                                   ensemble, dtype)


def test_a_wrong_closed_form_fails_the_cell_suite(plugged, monkeypatch):
    class Wrong(SinRNN):  # J_t off by a factor: the suite must catch it
        name = "toy_wrong"

        def step_with_derivatives(self, params, state, x, jacobian=True):
            d = super().step_with_derivatives(params, state, x, jacobian)
            return StepDerivatives(d.state, None if d.jacobian is None else 1.01 * d.jacobian, d.immediate)

    monkeypatch.setitem(CELLS, Wrong.name, Wrong)
    with pytest.raises(AssertionError):
        test_cells.test_closed_form_derivatives_match_autodiff_of_torch_cell(Wrong.name)


def test_the_contract_suite_and_the_oracle_table_take_the_new_rule_and_cell(plugged, monkeypatch):
    # the suites derive their tables from the registries: a new rule is a case, a new cell a kind
    assert (HalfTrace.name, None) in rule_cases.cases(RULES)
    with pytest.raises(AssertionError, match="rule_cases.py"):
        test_contract.test_every_registered_rule_has_examples()  # fails until it has examples
    monkeypatch.setitem(rule_cases.EXAMPLES, HalfTrace.name, [{}])
    test_contract.test_every_registered_rule_has_examples()
    with pytest.raises(AssertionError, match="ORACLE_CASES"):
        test_every_shape.test_every_registered_rule_has_an_oracle_here()
    for kind in (SinRNN.name, "vanilla"):
        case = (HalfTrace.name, {})
        test_contract.test_shapes_and_finiteness(case, kind)
        test_contract.test_ensemble_member_equals_solo_run(case, kind)
        test_contract.test_state_dict_round_trip_continues_bit_exactly(case, kind)
    for rule in ("full", "sparse"):
        test_contract.test_ensemble_member_equals_solo_run((rule, {"k": 2} if rule == "sparse" else {}), SinRNN.name)


def test_an_experiment_builds_and_pretrains_a_registered_cell(plugged):
    exp = Experiment(name="toy", claims=(), task="sine", task_options={}, cell=SinRNN.name, hidden_size=6,
                     methods=(Method("toy", HalfTrace.name),), pretrain_updates=5, pretrain_batch=2,
                     pretrain_chunk=10)
    cell, readout = build_model(exp, make_task("sine"), 0)
    assert isinstance(cell, SinRNN) and readout.in_features == 6
    snapshot = pretrain(exp, 0)
    assert set(snapshot.cell_state) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
