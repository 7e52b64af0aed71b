"""Sparse selection: the methods' defining properties, serially (MPI rank-independence is in test_mpi)."""

import numpy as np
import pytest

from pargap.parallel import SerialComm
from pargap.fitting.sparsify import DescriptorPool, select_sparse, unique_mask


def pool(rng, n=200, D=4, structures=10):
    x = rng.normal(size=(n, D))
    return DescriptorPool(x, np.ones(n), np.sort(rng.integers(0, structures, n)))


def test_unique_mask_keeps_first_of_equal_rows():
    x = np.array([[1.0, 2.0], [0.5, 0.5], [1.0, 2.0 + 1e-12], [0.5, 0.5], [3.0, 3.0]])
    assert unique_mask(x).tolist() == [True, True, False, False, True]


@pytest.mark.parametrize("method", ["random", "uniform", "cur_points", "farthest_point"])
def test_methods_pick_n_distinct_training_points(method, rng):
    p = pool(rng)
    x, w, ids = select_sparse(SerialComm(), p, method=method, n_sparse=17, seed=3)
    assert len(x) == 17 and len(set(ids.tolist())) == 17
    np.testing.assert_array_equal(x, p.x[ids])  # ids are global descriptor numbers
    assert np.all(np.diff(ids) > 0)


def test_farthest_point_is_greedy_maximin(rng):
    p = pool(rng, n=60, D=2)
    x, _, ids = select_sparse(SerialComm(), p, method="farthest_point", n_sparse=8, seed=0)
    # replay greedily from the first point
    chosen = [0]
    for _ in range(7):
        d = np.min(((p.x[:, None, :] - p.x[None, chosen, :]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    assert sorted(chosen) == ids.tolist()


def test_cur_prefers_high_leverage(rng):
    """Two points far out along an otherwise empty direction carry the top singular vector
    (k = rank/2 = 1 here), so their leverage is 1 and they are always chosen."""
    x = rng.normal(size=(300, 3)) * [1.0, 1.0, 1e-3]
    x[[7, 123]] = [[0, 0, 50.0], [0, 0, -50.0]]
    p = DescriptorPool(x, np.ones(300), np.arange(300))
    for seed in range(5):
        _, _, ids = select_sparse(SerialComm(), p, method="cur_points", n_sparse=10, seed=seed)
        assert {7, 123} <= set(ids.tolist())
