import pytest
import torch

from sparse_rtrl.cells import CELLS

#: every registered closed-form cell: a cell added to the registry is tested everywhere
CELL_KINDS = list(CELLS)


def make_cell(kind: str, I: int = 3, n: int = 5, seed: int = 0, **kw):
    torch.manual_seed(seed)
    cls = CELLS[kind]
    cell = cls(I, n, **kw).double()
    # widen the weights a little so J is far from the identity and nonlinearities bend
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(1.5)
    return cell


@pytest.fixture(autouse=True)
def _threads():
    # one thread: the tensors here are small, and CI machines are shared
    torch.set_num_threads(1)
    yield


def pytest_addoption(parser):
    parser.addoption(
        "--soak-steps", type=int, default=1_000_000,
        help="streaming steps of the slow soak test (tests/test_soak.py; run with -m slow)",
    )
    parser.addoption(
        "--cuda-dry-run", action="store_true",
        help="run tests/test_cuda.py on the CPU where there is no GPU (checks the tests' own logic)",
    )
