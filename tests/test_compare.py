"""Structure comparison (pargap.analysis.compare, pargap-compare): global SOAP kernels and their properties,
REMatch against independent solutions of the same transport problem, the CLI serially and under
mpirun with 1-3 ranks (every mpirun has a timeout)."""

import sys
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from ase.build import bulk, molecule
from scipy.optimize import minimize

from conftest import run_job
from pargap.analysis.compare import (
    KERNELS,
    Environments,
    StructureSoap,
    farthest_point_selection,
    kernel_matrix,
    kernel_pca,
    local_kernel,
    plan_tiles,
    raw_kernel,
    rematch_plan,
    rematch_plans,
    species_of,
    structure_kernel,
)
from pargap.errors import PargapError

SOAP = dict(cutoff=3.5, l_max=3, n_max=3, atom_sigma=0.5, cutoff_transition_width=0.5)
SOAP_STRING = "l_max=3 n_max=3 cutoff=3.5 atom_sigma=0.5 cutoff_transition_width=0.5 zeta=2"
ZETA = 2
GAMMA = {"average": None, "rematch": 0.1, "bestmatch": None}


def molecules(seed=0):
    """Rattled small molecules (H, C, N, O); equal-size pairs exist for the best match."""
    rng = np.random.default_rng(seed)
    out = []
    for name in ("CH3OH", "C2H6", "CH3CH2OH", "H2O", "NH3", "CH4", "CH3CHO", "HCOOH"):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.info["config_type"] = "small" if len(atoms) < 6 else "large"
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def frames():
    return molecules()


@pytest.fixture(scope="module")
def featurise(frames):
    """Environments with the species list of the whole set (plus Si for the bulk tests)."""
    return StructureSoap(species_of(frames) + [14], **SOAP)


def random_rotation(rng):
    Q, R = np.linalg.qr(rng.normal(size=(3, 3)))
    Q = Q * np.sign(np.diag(R))
    return Q if np.linalg.det(Q) > 0 else -Q


def transformed(atoms, rng):
    """Rotated, translated and permuted copy."""
    out = atoms.copy()
    R = random_rotation(rng)
    out.positions = out.positions @ R.T + rng.normal(0, 3.0, 3)
    return out[rng.permutation(len(out))]


# --------------------------------------------------------------------------------------------
# Properties of the global kernels


@pytest.mark.parametrize("kernel", KERNELS)
def test_self_similarity_is_one(featurise, frames, kernel):
    for atoms in frames:
        A = featurise(atoms)
        assert structure_kernel(A, A, zeta=ZETA, kernel=kernel, gamma=GAMMA[kernel]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_symmetry_and_range(featurise, frames, kernel):
    envs = [featurise(a) for a in frames]
    for i, A in enumerate(envs):
        for B in envs[i + 1:]:
            if kernel == "bestmatch" and len(A) != len(B):
                continue
            k_ab = structure_kernel(A, B, zeta=ZETA, kernel=kernel, gamma=GAMMA[kernel])
            k_ba = structure_kernel(B, A, zeta=ZETA, kernel=kernel, gamma=GAMMA[kernel])
            assert k_ab == pytest.approx(k_ba, abs=1e-10)
            assert 0.0 < k_ab < 1.0 - 1e-6  # different molecules are not identical


@pytest.mark.parametrize("kernel", KERNELS)
def test_invariant_under_rotation_translation_permutation(featurise, frames, kernel, rng):
    gamma = GAMMA[kernel]
    ref = frames[0]
    for atoms in frames[1:4]:
        moved = transformed(atoms, rng)
        A, A2, R = featurise(atoms), featurise(moved), featurise(ref)
        assert structure_kernel(A, A2, zeta=ZETA, kernel=kernel, gamma=gamma) == pytest.approx(1.0, abs=1e-9)
        if kernel != "bestmatch" or len(R) == len(A):
            assert structure_kernel(R, A2, zeta=ZETA, kernel=kernel, gamma=gamma) == pytest.approx(
                structure_kernel(R, A, zeta=ZETA, kernel=kernel, gamma=gamma), abs=1e-9)


def test_average_kernel_invariant_under_supercell_replication(featurise, rng):
    cell = bulk("Si", "diamond", a=5.43, cubic=True)
    cell.rattle(0.1, seed=3)
    other = bulk("Si", "diamond", a=5.5, cubic=True)
    other.rattle(0.15, seed=4)
    big = cell.repeat((2, 1, 3))
    A, A6, B = featurise(cell), featurise(big), featurise(other)
    assert len(A6) == 6 * len(A)
    assert structure_kernel(A, A6, zeta=ZETA) == pytest.approx(1.0, abs=1e-10)
    assert structure_kernel(B, A6, zeta=ZETA) == pytest.approx(structure_kernel(B, A, zeta=ZETA), abs=1e-10)
    assert structure_kernel(B, A, zeta=ZETA) < 0.9999  # premise: the test could fail


def test_different_centre_species_do_not_match(featurise, frames):
    A = featurise(frames[0])
    C = local_kernel(A, A, ZETA)
    different = A.Z[:, None] != A.Z[None, :]
    assert different.any() and np.all(C[different] == 0.0)
    assert np.all(C[~different] > 0.0)
    # the same vectors labelled with other species are orthogonal as structures
    relabelled = Environments(A.X, np.where(A.Z == 1, 6, 1))
    assert structure_kernel(A, relabelled, zeta=ZETA) < structure_kernel(A, A, zeta=ZETA) - 0.1


def test_bestmatch_needs_equal_counts(featurise, frames):
    with pytest.raises(PargapError, match="equal numbers"):
        structure_kernel(featurise(frames[0]), featurise(frames[3]), zeta=ZETA, kernel="bestmatch")


# --------------------------------------------------------------------------------------------
# REMatch


def random_local_kernel(rng, N, M, D=12):
    X = rng.random((N, D))
    Y = rng.random((M, D))
    X /= np.linalg.norm(X, axis=1)[:, None]
    Y /= np.linalg.norm(Y, axis=1)[:, None]
    return local_kernel(X, Y, 2)


def plain_sinkhorn(C, gamma, iterations=20000):
    """Textbook Sinkhorn in the plain domain: P = diag(u) exp(-(1 - C)/gamma) diag(v)."""
    N, M = C.shape
    G = np.exp(-(1.0 - C) / gamma)
    u, v = np.ones(N), np.ones(M)
    for _ in range(iterations):
        u = (1.0 / N) / (G @ v)
        v = (1.0 / M) / (G.T @ u)
    return u[:, None] * G * v[None, :]


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (2, 7)])
@pytest.mark.parametrize("gamma", [0.3, 0.05])
def test_rematch_equals_plain_sinkhorn(rng, shape, gamma):
    C = random_local_kernel(rng, *shape)
    P = rematch_plan(C, gamma)
    P_ref = plain_sinkhorn(C, gamma)
    np.testing.assert_allclose(P.sum(axis=1), 1 / shape[0], rtol=1e-9)
    np.testing.assert_allclose(P.sum(axis=0), 1 / shape[1], rtol=1e-9)
    assert np.max(np.abs(P - P_ref)) < 1e-10
    assert raw_kernel(C, "rematch", gamma) == pytest.approx(np.sum(P_ref * C), abs=1e-10)


@pytest.mark.parametrize("shape", [(3, 3), (3, 4)])
def test_rematch_equals_constrained_minimisation(rng, shape):
    """The primal problem min sum P (1 - C + gamma ln P) with the marginal constraints, by SLSQP."""
    N, M = shape
    gamma = 0.2
    C = random_local_kernel(rng, N, M)

    def objective(p):
        P = np.maximum(p.reshape(N, M), 1e-300)
        return np.sum(P * (1.0 - C + gamma * np.log(P)))

    constraints = [{"type": "eq", "fun": lambda p, i=i: p.reshape(N, M)[i].sum() - 1.0 / N} for i in range(N)]
    constraints += [{"type": "eq", "fun": lambda p, j=j: p.reshape(N, M)[:, j].sum() - 1.0 / M} for j in range(M - 1)]
    result = minimize(objective, np.full(N * M, 1.0 / (N * M)), method="SLSQP", constraints=constraints,
                      bounds=[(1e-12, 1.0)] * (N * M), options={"ftol": 1e-14, "maxiter": 1000})
    assert result.success, result.message
    P_ref = result.x.reshape(N, M)
    assert np.max(np.abs(rematch_plan(C, gamma) - P_ref)) < 1e-6
    assert raw_kernel(C, "rematch", gamma) == pytest.approx(np.sum(P_ref * C), abs=1e-6)


def test_rematch_limits(rng):
    C = random_local_kernel(rng, 6, 6)
    best, average = raw_kernel(C, "bestmatch"), raw_kernel(C, "average")
    assert best - average > 0.01  # premise: the limits are distinguishable
    gaps = [best - raw_kernel(C, "rematch", g) for g in (0.1, 0.03, 0.01, 1e-3, 1e-4)]
    assert all(g >= -1e-12 for g in gaps)
    assert all(b <= a + 1e-12 for a, b in zip(gaps, gaps[1:]))  # approaches monotonically
    assert gaps[-1] < 1e-8
    assert raw_kernel(C, "rematch", 1e4) == pytest.approx(average, abs=1e-5)
    assert abs(raw_kernel(C, "rematch", 1e2) - average) < abs(raw_kernel(C, "rematch", 1.0) - average)


def test_rematch_with_species_blocks_and_small_gamma(featurise, frames):
    """C nearly block diagonal (species in different proportions): plain Sinkhorn stalls here."""
    A, B = featurise(frames[2]), featurise(frames[6])
    C = local_kernel(A, B, ZETA)
    for gamma in (0.05, 0.01):
        P = rematch_plan(C, gamma)
        np.testing.assert_allclose(P.sum(axis=1), 1 / len(A), rtol=1e-9)
        np.testing.assert_allclose(P.sum(axis=0), 1 / len(B), rtol=1e-9)


@pytest.mark.parametrize("gamma", [0.1, 0.01])
def test_batched_rematch_equals_one_by_one(featurise, frames, gamma):
    A = featurise(frames[5])  # CH4; HCOOH has 5 atoms too
    Cs = np.stack([local_kernel(A, featurise(f), ZETA) for f in frames if len(f) == len(frames[5])])
    assert len(Cs) == 2
    Cs = np.concatenate([Cs, Cs[:, ::-1]])  # a batch of several pairs
    batch = rematch_plans(Cs, gamma)
    for C, P in zip(Cs, batch):
        assert np.max(np.abs(P - rematch_plan(C, gamma))) < 1e-12


# --------------------------------------------------------------------------------------------
# Matrices, selection, map, layout


@pytest.mark.parametrize("kernel", ["average", "rematch"])
def test_kernel_matrix_matches_pairwise(frames, kernel):
    K = kernel_matrix(frames, soap=SOAP, zeta=ZETA, kernel=kernel, gamma=0.1)
    featurise = StructureSoap(species_of(frames), **SOAP)
    envs = [featurise(a) for a in frames]
    ref = np.array([[structure_kernel(A, B, zeta=ZETA, kernel=kernel, gamma=0.1) for B in envs] for A in envs])
    assert np.max(np.abs(K - ref)) < 1e-12
    K_ab = kernel_matrix(frames[:3], frames[3:], soap=SOAP, zeta=ZETA, kernel=kernel, gamma=0.1)
    assert np.max(np.abs(K_ab - ref[:3, 3:])) < 1e-12


def test_farthest_point_selection_picks_one_per_cluster():
    rng = np.random.default_rng(0)
    centres = np.eye(4)
    labels = np.repeat(np.arange(4), 5)
    X = centres[labels] + 0.05 * rng.normal(size=(20, 4))
    X /= np.linalg.norm(X, axis=1)[:, None]
    K = X @ X.T
    chosen = farthest_point_selection(K, 4)
    assert sorted(labels[chosen]) == [0, 1, 2, 3]
    assert len(set(farthest_point_selection(K, 20))) == 20
    with pytest.raises(PargapError):
        farthest_point_selection(K, 21)


def test_kernel_pca_recovers_linear_pca():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 5)) * [5.0, 2.0, 0.5, 0.1, 0.1]
    Y = kernel_pca(X @ X.T, 2)
    Xc = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    ref = Xc @ Vt[:2].T
    for k in range(2):
        assert np.allclose(np.abs(Y[:, k]), np.abs(ref[:, k]), atol=1e-8)


@pytest.mark.parametrize("n_a,n_b,symmetric,tile", [(10, 10, True, 3), (7, 11, False, 4), (5, 5, True, 10)])
def test_tiles_cover_each_entry_once(n_a, n_b, symmetric, tile):
    count = np.zeros((n_a, n_b), dtype=int)
    for t in plan_tiles(n_a, n_b, symmetric, tile):
        count[t.r0:t.r1, t.c0:t.c1] += 1
        if t.mirror:
            count[t.c0:t.c1, t.r0:t.r1] += 1
    assert np.all(count == 1)


def test_soap_settings_parsing():
    from pargap.cli.compare import soap_settings
    from pargap.errors import ConfigError

    soap, zeta = soap_settings("soap l_max=6 n_max=8 cutoff=5.0 atom_sigma=0.5 zeta=4 delta=0.2 n_sparse=100")
    assert soap == {"l_max": 6, "n_max": 8, "cutoff": 5.0, "atom_sigma": 0.5} and zeta == 4.0
    with pytest.raises(ConfigError, match="did you mean 'atom_sigma'"):
        soap_settings("l_max=6 n_max=8 cutoff=5 atom_sigm=0.5")
    with pytest.raises(ConfigError, match="n_max is required"):
        soap_settings("l_max=6 cutoff=5 atom_sigma=0.5")


# --------------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def database(tmp_path_factory, frames):
    folder = tmp_path_factory.mktemp("compare")
    ase.io.write(folder / "db.xyz", frames, format="extxyz")
    ase.io.write(folder / "other.xyz", molecules(seed=7)[:5], format="extxyz")
    return folder


def test_cli_writes_the_kernel_selection_and_map(database, frames, capsys):
    from pargap.cli.compare import main

    out = database / "K.h5"
    code = main([str(database / "db.xyz"), "-o", str(out), "--soap", SOAP_STRING, "--tile", "3",
                 "--select", "3", "--map", str(database / "map.png"), "-q"])
    assert code == 0
    with h5py.File(out) as f:
        K = f["kernel"][:]
        assert f.attrs["kernel_type"] == "average"
    ref = kernel_matrix(ase.io.read(database / "db.xyz", ":"), soap=SOAP, zeta=ZETA)
    assert K.shape == (len(frames), len(frames))
    assert np.max(np.abs(K - ref)) < 1e-12
    assert np.all(K == K.T) and np.all(np.diag(K) == 1.0)
    printed = [int(i) for i in capsys.readouterr().out.split()]
    assert printed == farthest_point_selection(ref, 3)
    assert (database / "map.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(database.glob("*.tmp-*"))

    code = main([str(database / "db.xyz"), "-o", str(out), "--soap", SOAP_STRING, "--select", "2",
                 "--select-out", str(database / "diverse.xyz"), "-q"])
    assert code == 0
    chosen = ase.io.read(database / "diverse.xyz", ":")
    assert [a.get_chemical_formula() for a in chosen] == \
        [frames[i].get_chemical_formula() for i in farthest_point_selection(ref, 2)]


def test_cli_errors(database, capsys):
    from pargap.cli.compare import main

    assert main([str(database / "missing.xyz"), "-o", str(database / "x.h5"), "-q"]) == 1
    assert "missing.xyz" in capsys.readouterr().err
    assert main([str(database / "db.xyz"), str(database / "other.xyz"), "-o", str(database / "x.h5"),
                 "--map", "m.png"]) == 2
    assert main([str(database / "db.xyz"), "-o", str(database / "x.h5"), "--soap", "l_max=2 n_max=2 cutof=3",
                 "-q"]) == 1
    assert "did you mean 'cutoff'" in capsys.readouterr().err
    assert not (database / "x.h5").exists()


def compare_job(ranks, *args):
    return run_job(["mpirun", "-n", str(ranks), "--oversubscribe", sys.executable, "-m", "pargap.cli.compare",
                    *args], timeout=180)


@pytest.mark.parametrize("kernel", ["average", "rematch"])
def test_mpi_results_identical_for_any_rank_count(database, kernel):
    """mpirun -n 1, 2, 3 (tiles of 2 structures, so every rank count splits the work differently)
    give bitwise identical matrices, for one database and for two sets; equal to the library call."""
    results = {}
    for other in ([], [database / "other.xyz"]):
        for ranks in (1, 2, 3):
            out = database / f"K_{kernel}_{len(other)}_{ranks}.h5"
            run = compare_job(ranks, database / "db.xyz", *other, "-o", out, "--soap", SOAP_STRING,
                              "--kernel", kernel, "--gamma", "0.05", "--tile", "2")
            assert run.returncode == 0, run.stdout + run.stderr
            assert "[pargap] wrote" in run.stdout  # progress on rank 0, once
            assert run.stdout.count("pargap-compare on") == 1
            with h5py.File(out) as f:
                results[len(other), ranks] = f["kernel"][:]
        for ranks in (2, 3):
            np.testing.assert_array_equal(results[len(other), ranks], results[len(other), 1])
    frames = ase.io.read(database / "db.xyz", ":")
    other = ase.io.read(database / "other.xyz", ":")
    ref = kernel_matrix(frames, other, soap=SOAP, zeta=ZETA, kernel=kernel, gamma=0.05,
                        species=species_of(frames + other))
    assert results[1, 1].shape == (len(frames), len(other))
    assert np.max(np.abs(results[1, 1] - ref)) < 1e-12
    assert not list(Path(database).glob("*.tmp-*"))
