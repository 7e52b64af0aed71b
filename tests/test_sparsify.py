"""Sparse selection: the methods' defining properties, serially (rank-independence under mpirun is
in test_sparsify_mpi)."""

import numpy as np
import pytest

from pargap.fitting.cur import SINGULAR_TOLERANCE, leverage
from pargap.fitting.distinct import repeated
from pargap.fitting.random_stream import uniform_by_id
from pargap.fitting.sparsify import DescriptorPool, global_numbers, select_sparse, smallest_scores
from pargap.parallel import SerialComm


def pool(rng, n=200, D=4, structures=10):
    x = rng.normal(size=(n, D))
    return DescriptorPool(x, np.ones(n), np.sort(rng.integers(0, structures, n)))


def test_repeated_descriptors_dropped_by_gap_fits_neighbour_rule(rng):
    """In the order (hash, number descending), of two neighbours equal within 1e-10 the first
    goes: of bit-identical rows the lowest number stays, of near-equal ones the larger hash."""
    x = np.abs(rng.normal(size=(9, 3)))
    x[5] = x[1]  # a copy in another structure
    x[7] = x[1] + 1e-12  # equal within gap_fit's tolerances, hash 3e-12 larger
    x[6] = x[2][::-1]  # same hash sum |x|, other components: kept
    x[3] = x[2] * [1, 1, 1 + 1e-9]  # differs by more than 1e-10: kept
    x[8] = x[4]
    drop = repeated(SerialComm(), x, np.arange(9))
    assert np.flatnonzero(drop).tolist() == [1, 5, 8]


def test_global_numbers_follow_structures_then_rows():
    structure = np.array([0, 0, 2, 2, 2, 5])
    keep = np.array([True, False, True, True, False, True])
    positions, number, n = global_numbers(SerialComm(), structure, keep)
    assert positions.tolist() == [0, 2, 3, 5] and number.tolist() == [0, 1, 2, 3] and n == 4


def test_random_stream_is_keyed_by_number():
    """u(g) does not depend on which other numbers are drawn with it: any subset, in any order,
    equals the one stream over all numbers (numpy's Philox Generator)."""
    every = np.random.Generator(np.random.Philox(key=11)).random(1000)
    ids = np.array([999, 3, 4, 5, 6, 7, 400, 0, 401, 2])
    np.testing.assert_array_equal(uniform_by_id(11, ids), every[ids])
    assert not np.array_equal(uniform_by_id(12, ids), every[ids])


def test_smallest_scores_by_bisection_equals_a_sort(rng):
    scores = np.round(rng.normal(size=500), 1)  # many ties, negative and positive
    ids = rng.permutation(500) * 3
    for m in (1, 7, 250, 500):
        take = smallest_scores(SerialComm(), scores, ids, m)
        expected = np.lexsort((ids, scores))[:m]
        assert take.sum() == m and set(np.flatnonzero(take)) == set(expected.tolist())


def test_cur_leverage_is_gap_fits_from_the_svd_of_the_candidates(rng):
    """p_j = min(1, (m/k) sum_{r<=k} V_jr^2), V the right singular vectors of X (D x n), k half the
    number of singular values above 1e-13. The data has singular values 1e-9 s_max that a Gram
    matrix X X^T cannot resolve (eps s_max^2 > (1e-9 s_max)^2): gap_fit counts them."""
    n, D, m = 300, 10, 20
    x = rng.normal(size=(n, D)) * np.logspace(0, -9, D)
    _, s, Vt = np.linalg.svd(x.T, full_matrices=False)
    k = int(np.sum(s > SINGULAR_TOLERANCE)) // 2
    assert k == 5
    V = Vt.T[:, :k]
    expected = np.minimum(1.0, (m / k) * (V**2).sum(1))
    np.testing.assert_allclose(leverage(SerialComm(), x, m), expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("method", ["random", "uniform", "cur_points", "farthest_point"])
def test_methods_pick_n_distinct_training_points(method, rng):
    p = pool(rng)
    x, w, ids = select_sparse(SerialComm(), p, method=method, n_sparse=17, seed=3)
    assert len(x) == 17 and len(set(ids.tolist())) == 17
    np.testing.assert_array_equal(x, p.x[ids])  # ids are global descriptor numbers
    assert np.all(np.diff(ids) > 0)


def test_random_takes_the_m_smallest_draws(rng):
    p = pool(rng)
    _, _, ids = select_sparse(SerialComm(), p, method="random", n_sparse=17, seed=3)
    assert ids.tolist() == sorted(np.argsort(uniform_by_id(3, np.arange(200)))[:17].tolist())


def test_uniform_fills_from_the_rest_when_bins_run_out():
    """1-D data in two clumps: the 3-point grid over [0, 1] has 2 occupied bins, so one point
    is drawn at random from the others."""
    x = np.concatenate([np.linspace(0, 0.01, 10), np.linspace(0.99, 1.0, 10)])[:, None]
    p = DescriptorPool(x, np.ones(20), np.arange(20))
    _, _, ids = select_sparse(SerialComm(), p, method="uniform", n_sparse=3, seed=0)
    assert len(ids) == 3 and {0, 10} <= set(ids.tolist())


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
