"""The sparse GP's log marginal likelihood: the QR form equals log N(y | 0, Q_NN + Lambda) computed
densely, its cheap delta/sigma rescaling equals a rebuild, and maximising it recovers the noise
level of synthetic data whose noise is known."""

import dataclasses
import math
import sys
import tomllib
from pathlib import Path

import ase.io
import numpy as np
import pytest
import scipy.linalg
from ase import Atoms

from conftest import lj_structures, random_model, run_job
from pargap.errors import PargapError
from pargap.fitting.fit import build_rows, fit
from pargap.fitting.likelihood import Likelihood, dense_log_likelihood, log_likelihood, optimise, row_noise
from pargap.fitting.structures import load_structures
from pargap.gp.observations import VIRIAL_COMPONENTS, model_rows
from pargap.parallel import SerialComm
from pargap.potential.potential import Potential
from pargap.progress import Log, PhaseTimer
from pargap.settings.config import settings_from_dict

QUIET = Log(SerialComm(), quiet=True)
SIGMA = (0.02, 0.1, 0.2, 0.0)


def lj_settings(tmp_path, **extra):
    """Rattled LJ bulk (energies, forces, virials) and clusters; one frame with its own energy_sigma
    (fixed noise group), two with a config_type_sigma of their own."""
    frames = lj_structures(n_bulk=3, n_cluster=3, seed=5)
    frames[1].info["energy_sigma"] = 0.05
    frames[2].info["config_type"] = "hot"
    frames[4].info["config_type"] = "hot"
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    frames = ase.io.read(tmp_path / "train.xyz", ":")  # as the fit reads them (rounded in the text)
    data = {
        "at_file": str(tmp_path / "train.xyz"), "e0": 0.0, "default_sigma": list(SIGMA),
        "config_type_sigma": {"hot": [0.04, 0.3, 0.3, 0.0]}, "sparse_jitter": 1e-6, "rnd_seed": 4,
        "gap": [{"descriptor": "distance_2b", "cutoff": 5.0, "cutoff_transition_width": 1.5,
                 "delta": 0.5, "theta_uniform": 0.5, "n_sparse": 12, "sparse_method": "uniform"}],
    }
    data.update(extra)
    return settings_from_dict(data), frames


def dense_reference(settings, frames, models, delta_factor=1.0, scale=(1, 1, 1, 1)):
    """log N(y | 0, K_NM K_MM^-1 K_MN + Lambda) from model_rows and sigmas written out by hand,
    with K scaled by delta_factor^2 and the settings' sigmas by ``scale`` (energy, force, virial)."""
    rows, y, sigma = [], [], []
    d2 = delta_factor**2
    for atoms in frames:
        n = len(atoms)
        r = model_rows(atoms, models)
        ct = atoms.info.get("config_type", "default")
        sE, sF, sV, _ = settings.config_type_sigma.get(ct, settings.default_sigma)
        rows.append(r.energy[None, :])
        y.append([atoms.info["energy"]])
        sigma.append([atoms.info["energy_sigma"] if "energy_sigma" in atoms.info else sE * math.sqrt(n) * scale[0]])
        rows.append(r.forces.reshape(3 * n, -1))
        y.append(atoms.arrays["forces"].ravel())
        sigma.append(np.full(3 * n, sF * scale[1]))
        if "virial" in atoms.info:
            W = np.asarray(atoms.info["virial"]).reshape(3, 3)
            rows.append(np.array([r.virial[k, l] for k, l in VIRIAL_COMPONENTS]))
            y.append([0.5 * (W[k, l] + W[l, k]) for k, l in VIRIAL_COMPONENTS])
            sigma.append(np.full(6, sV * math.sqrt(n) * scale[2]))
    K_nm = d2 * np.vstack(rows)
    K_mm = scipy.linalg.block_diag(*[d2 * m.covariance_sparse(0.0) for m in models])
    K_mm += settings.sparse_jitter * np.eye(len(K_mm))
    return dense_log_likelihood(K_nm, np.concatenate(y), np.concatenate(sigma), K_mm)


def test_likelihood_equals_dense_reference(tmp_path):
    settings, frames = lj_settings(tmp_path)
    lik = Likelihood(settings, log=QUIET)
    terms = lik.terms()
    models = build_rows(lik.settings, SerialComm(), QUIET, PhaseTimer(SerialComm(), QUIET), 4)[0]
    assert terms.counts.tolist() == [5, sum(3 * len(a) for a in frames), 18, 0, 1]
    reference = dense_reference(settings, frames, models)
    assert log_likelihood(terms) == pytest.approx(reference, rel=1e-10, abs=1e-8)
    # rescaled delta and sigmas without new rows == the dense likelihood at those values
    log_delta, log_scale = np.array([0.3]), np.array([-0.4, 0.25, 0.6, 0.0])
    scaled = dense_reference(settings, frames, models, math.exp(0.3), np.exp(log_scale))
    assert log_likelihood(terms, log_delta, log_scale) == pytest.approx(scaled, rel=1e-10, abs=1e-8)
    assert abs(scaled - reference) > 1.0  # the rescaling is not a no-op
    # and == a full rebuild with those settings
    rebuilt = Likelihood(lik.settings_for(None, log_delta, log_scale), log=QUIET)()
    assert rebuilt == pytest.approx(scaled, rel=1e-10, abs=1e-8)


def test_gradient_equals_finite_differences(tmp_path):
    """The analytic d log p / d log delta and d log p / d log c (all groups, a fixed group present)
    equal central differences of log p."""
    settings, _ = lj_settings(tmp_path)
    terms = Likelihood(settings, log=QUIET).terms()
    log_delta, log_scale = np.array([0.3]), np.array([-0.4, 0.25, 0.6, 0.0])
    value, d_delta, d_scale = log_likelihood(terms, log_delta, log_scale, gradient=True)
    assert value == log_likelihood(terms, log_delta, log_scale)
    h = 1e-5
    numeric = (log_likelihood(terms, log_delta + h, log_scale) - log_likelihood(terms, log_delta - h, log_scale)) / (2 * h)
    assert d_delta[0] == pytest.approx(numeric, rel=1e-5)
    for g in range(3):
        e = np.eye(4)[g] * h
        numeric = (log_likelihood(terms, log_delta, log_scale + e) - log_likelihood(terms, log_delta, log_scale - e)) / (2 * h)
        assert d_scale[g] == pytest.approx(numeric, rel=1e-5)
    assert d_scale[3] == 0.0  # no Hessian rows


def test_masked_forces_leave_the_likelihood(tmp_path):
    """force_mask rows (infinite sigma) are not observations: neither in N nor in log|Lambda|."""
    settings, frames = lj_settings(tmp_path)
    mask = np.zeros(len(frames[0]), dtype=bool)
    mask[:2] = True
    for atoms in frames:
        atoms.calc = None  # the labels are in info/arrays already
    frames[0].arrays["force_mask"] = mask
    ase.io.write(tmp_path / "masked.xyz", frames, format="extxyz")
    masked = dataclasses.replace(settings, at_file=str(tmp_path / "masked.xyz"))
    groups, _ = row_noise(load_structures(SerialComm(), settings, QUIET)[0], settings)
    masked_groups, _ = row_noise(load_structures(SerialComm(), masked, QUIET)[0], masked)
    assert np.sum(masked_groups == -1) == 6 and np.sum(groups == -1) == 0
    assert Likelihood(masked, log=QUIET).counts[1] == Likelihood(settings, log=QUIET).counts[1] - 6


def random_clusters(rng, count, n_atoms=5, min_distance=1.6):
    frames = []
    while len(frames) < count:
        pos = [np.zeros(3)]
        while len(pos) < n_atoms:
            p = rng.normal(0, 1.4, 3)
            if min(np.linalg.norm(p - q) for q in pos) > min_distance:
                pos.append(p)
        frames.append(Atoms("Ar" * n_atoms, positions=pos))
    return frames


def noisy_data(tmp_path, sigma_e, sigma_f, seed=11, count=60):
    """Clusters labelled by a random smooth pair potential (a 2b GAP with theta 0.6), plus Gaussian
    noise of known size: sigma_e sqrt(N) on energies (gap_fit's sigma_per_atom), sigma_f on forces."""
    rng = np.random.default_rng(seed)
    true = Potential([random_model(rng, M=12, cutoff=4.0, width=1.0, theta=0.6)], {18: 0.0})
    frames = random_clusters(rng, count)
    for atoms in frames:
        p = true.predict(atoms)
        atoms.info["energy"] = p["energy"] + sigma_e * math.sqrt(len(atoms)) * rng.normal()
        atoms.arrays["forces"] = p["forces"] + sigma_f * rng.normal(size=(len(atoms), 3))
    ase.io.write(tmp_path / "noisy.xyz", frames, format="extxyz")
    return str(tmp_path / "noisy.xyz")


@pytest.mark.parametrize("what", [("sigma", "delta"), ("sigma", "delta", "theta")])
def test_optimiser_recovers_known_noise(tmp_path, what):
    """Start 4x too high on energies and 4x too low on forces (and theta off by 1.6x): the
    maximum-likelihood sigmas land within 20% of the noise that was added."""
    sigma_e, sigma_f = 0.02, 0.05
    path = noisy_data(tmp_path, sigma_e, sigma_f)
    settings = settings_from_dict({
        "at_file": path, "e0": 0.0, "default_sigma": [4 * sigma_e, sigma_f / 4, 1.0, 0.0],
        "sparse_jitter": 1e-8, "rnd_seed": 1,
        "gap": [{"descriptor": "distance_2b", "cutoff": 4.0, "cutoff_transition_width": 1.0, "delta": 1.0,
                 "theta_uniform": 0.6 if "theta" not in what else 1.0, "n_sparse": 24,
                 "sparse_method": "uniform"}],
    })
    result = optimise(settings, log=QUIET, what=what)
    chosen = result.settings.default_sigma
    assert chosen[0] == pytest.approx(sigma_e, rel=0.2)
    assert chosen[1] == pytest.approx(sigma_f, rel=0.2)
    assert chosen[2:] == settings.default_sigma[2:]  # no virials, no Hessians: untouched
    assert result.log_likelihood > result.initial_log_likelihood
    if "theta" in what:
        assert result.settings.gap[0].theta_uniform != 1.0
    # the optimum is a maximum: moving any parameter lowers log p
    lik = Likelihood(result.settings, log=QUIET)
    terms = lik.terms()
    best = log_likelihood(terms)
    assert best == pytest.approx(result.log_likelihood, abs=1e-6)
    for k in range(3):
        for step in (-0.05, 0.05):
            log_delta, log_scale = np.zeros(1), np.zeros(4)
            (log_delta if k == 0 else log_scale)[max(k - 1, 0)] = step
            assert log_likelihood(terms, log_delta, log_scale) < best


# ---- under mpirun --------------------------------------------------------------------------------

HERE = Path(__file__).resolve().parent


def mpirun(n, *args, timeout=120):
    return run_job(["mpirun", "-n", str(n), "--oversubscribe", sys.executable, *args], timeout=timeout)


@pytest.fixture(scope="module")
def noisy_toml(tmp_path_factory):
    folder = tmp_path_factory.mktemp("likelihood_mpi")
    path = noisy_data(folder, 0.02, 0.05, count=30)
    settings = settings_from_dict({
        "at_file": path, "e0": 0.0, "default_sigma": [0.05, 0.02, 1.0, 0.0], "sparse_jitter": 1e-8,
        "rnd_seed": 2, "gp_file": str(folder / "gap.h5"),
        "gap": [{"descriptor": "distance_2b", "cutoff": 4.0, "cutoff_transition_width": 1.0, "delta": 1.0,
                 "theta_uniform": 1.0, "n_sparse": 20, "sparse_method": "uniform"}],
    })
    (folder / "fit.toml").write_text(settings.to_toml())
    return folder, settings


def test_two_ranks_equal_one(noisy_toml):
    """Likelihood values on 2 ranks (rows split, group triangles reduced by TSQR) equal the serial
    ones to rounding, and the optimiser (rank 0 drives, all ranks rebuild) lands on the same point."""
    folder, settings = noisy_toml
    run = mpirun(2, HERE / "mpi" / "likelihood_run.py", folder / "fit.toml", folder / "two.npz")
    assert run.returncode == 0, run.stderr
    two = np.load(folder / "two.npz")
    assert int(two["ranks"]) == 2
    lik = Likelihood(settings, log=QUIET)
    assert float(two["base"]) == pytest.approx(lik(), rel=1e-9)
    assert float(two["scaled"]) == pytest.approx(lik({0: 0.8}, np.array([0.2]), np.array([-0.3, 0.2, 0, 0])),
                                                 rel=1e-9)
    one = optimise(settings, log=QUIET, max_rebuilds=8)
    assert float(two["best"]) == pytest.approx(one.log_likelihood, rel=1e-8)
    assert two["sigma"] == pytest.approx(one.settings.default_sigma, rel=1e-4)
    assert float(two["theta"]) == pytest.approx(one.settings.gap[0].theta_uniform, rel=1e-4)


def test_cli_optimise_prints_toml_and_fits_with_it(noisy_toml):
    """pargap-fit --optimise on 2 ranks: the printed TOML is a valid settings file with the
    maximum-likelihood sigmas, and the potential written is the fit with those settings (its
    stored GP factor included)."""
    folder, _ = noisy_toml
    run = mpirun(2, "-m", "pargap.cli.fit", folder / "fit.toml", "--optimise", "--optimise-what", "sigma,delta")
    assert run.returncode == 0, run.stderr
    assert "log p(y)" in run.stdout
    text = "\n".join(line for line in run.stdout.splitlines() if not line.startswith("[pargap]"))
    chosen = settings_from_dict(tomllib.loads(text))
    assert chosen.default_sigma[0] == pytest.approx(0.02, rel=0.3)  # 30 energies only: a loose check
    assert chosen.default_sigma[1] == pytest.approx(0.05, rel=0.2)
    assert chosen.gap[0].theta_uniform == 1.0  # not asked for
    written = Potential.load(folder / "gap.h5")
    assert "default_sigma = [" + ", ".join(repr(v) for v in chosen.default_sigma) + "]" in written.settings
    assert written.factor is not None and written.factor.shape == (20, 20)
    serial = fit(chosen, log=QUIET)  # alpha itself is ill-conditioned here: compare predictions
    from pargap.potential.variance import PredictiveVariance

    for atoms in ase.io.read(chosen.at_file, ":5"):
        assert written.predict(atoms)["energy"] == pytest.approx(serial.predict(atoms)["energy"], rel=1e-7)
        assert PredictiveVariance(written)(atoms)["energy_variance"] == pytest.approx(
            PredictiveVariance(serial)(atoms)["energy_variance"], rel=1e-5)


def test_optimiser_recovers_hessian_noise(tmp_path):
    """Dimers of a Gaussian-well pair energy with noisy energies (0.01 eV) and noisy stretch
    eigenvalues (0.05 eV/A^2): the Hessian noise group is recovered too."""
    from test_hessian import dimer

    rng = np.random.default_rng(0)
    energy = lambda r: np.exp(-(r - 3.0) ** 2)  # noqa: E731
    second = lambda r: (4 * (r - 3.0) ** 2 - 2) * np.exp(-(r - 3.0) ** 2)  # noqa: E731
    frames = [dimer(r, energy(r) + 0.01 * rng.normal(), 2 * second(r) + 0.05 * rng.normal())
              for r in rng.uniform(2.0, 4.5, 80)]
    ase.io.write(tmp_path / "dimers.xyz", frames, format="extxyz")
    settings = settings_from_dict({
        "at_file": str(tmp_path / "dimers.xyz"), "e0": 0.0, "default_sigma": [0.1, 1.0, 1.0, 0.01],
        "sigma_per_atom": False, "sparse_jitter": 1e-8, "rnd_seed": 1,
        "gap": [{"descriptor": "distance_2b", "cutoff": 6.0, "cutoff_transition_width": 0.5, "delta": 1.0,
                 "theta_uniform": 0.8, "n_sparse": 20, "sparse_method": "uniform"}],
    })
    chosen = optimise(settings, log=QUIET, what=("sigma", "delta")).settings.default_sigma
    assert chosen[0] == pytest.approx(0.01, rel=0.2)
    assert chosen[3] == pytest.approx(0.05, rel=0.2)


def test_delta_bound_keeps_k_mm_positive_definite():
    """A numerically singular K_MM block (20 points, length scale >> spacing) may grow only while
    delta^2 K_MM + jitter stays positive definite; a clearly positive block is not limited."""
    from pargap.fitting.likelihood import BOUND, Terms, delta_bounds
    from pargap.gp.model import cholesky_factor

    x = np.linspace(2.0, 5.0, 20)
    singular = 100.0 * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2)
    regular = np.eye(5) + 0.1
    terms = Terms([None] * 5, np.zeros(5), np.zeros(5), np.array([0] * 20 + [1] * 5), [singular, regular], [0, 1], 1e-8)
    upper = delta_bounds(terms, 2)
    assert upper[1] == BOUND and upper[0] < 5.0
    cholesky_factor(np.exp(2 * upper[0]) * singular + 1e-8 * np.eye(20))  # fine at the bound
    with pytest.raises(PargapError):  # and not much (a factor e^6 in delta) beyond it
        cholesky_factor(np.exp(2 * (upper[0] + 6.0)) * singular + 1e-8 * np.eye(20))
