"""The charge model (pargap.fitting.charges): ESP rows are the Coulomb sums they claim to be, the total
charge is held to its sigma, fixed element charges are recovered exactly, the distributed fit
equals the serial one, settings parse in both forms, the potential file and the calculator carry
the charges, and bad ESP input is reported with file, structure and key."""

import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError

from conftest import run_job
from pargap import GAPCalculator
from pargap.fitting.charges import charge_covariance_rows
from pargap.potential.charges import COULOMB, electrostatic_potential, predict_charges
from pargap.settings.config import load_toml, parse_gapfit_args, settings_from_dict
from pargap.data.frames import extract
from pargap.errors import ConfigError, PargapError
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.potential.potential import Potential
from pargap.progress import Log

HERE = Path(__file__).resolve().parent
FIXED = {1: 0.12, 6: -0.31, 8: -0.47}  # element charges (e) of the synthetic data

SOAP = """
[[charge_gap]]
descriptor = "soap"
cutoff = 3.0
cutoff_transition_width = 1.0
n_max = 3
l_max = 2
atom_sigma = 0.5
"""


def esp_points(atoms, rng, k=40, radius=3.5):
    """k random points on a sphere of ``radius`` Angstrom around the centroid (outside the atoms)."""
    u = rng.normal(size=(k, 3))
    return atoms.positions.mean(0) + radius * u / np.linalg.norm(u, axis=1)[:, None]


def fixed_charge_frames(rng, n=6, offset=0.0):
    """Rattled methanol and ethanol with the ESP of the element charges FIXED; total_charge is
    their sum plus ``offset`` (offset != 0 makes the total charge contradict the ESP)."""
    frames = []
    for k in range(n):
        atoms = molecule("CH3OH" if k % 2 == 0 else "CH3CH2OH")
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        q = np.array([FIXED[z] for z in atoms.numbers])
        points = esp_points(atoms, rng)
        atoms.info.update(esp_points=points.ravel(), esp_values=electrostatic_potential(points, atoms.positions, q),
                          total_charge=float(q.sum()) + offset)
        frames.append(atoms)
    return frames


def write_fit(folder, frames, body, **settings):
    """Write frames and a TOML with the charge model ``body`` (plus settings) -> settings path."""
    ase.io.write(folder / "train.xyz", frames, format="extxyz")
    lines = [f'at_file = "{folder / "train.xyz"}"', f'gp_file = "{folder / "out.h5"}"', "rnd_seed = 3"]
    lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in settings.items()]
    (folder / "fit.toml").write_text("\n".join(lines) + "\n" + body)
    return folder / "fit.toml"


def quiet_fit(settings):
    return fit(settings, SerialComm(), Log(SerialComm(), quiet=True))


# ---- rows ------------------------------------------------------------------------------------

def test_esp_rows_equal_direct_coulomb_sum(tmp_path, rng):
    """block[:, :M] @ alpha * sigma is sum_i q_i / |r - r_i| (times C) computed atom by atom, and the
    total-charge row is sum_i q_i, for the charges q the model predicts."""
    frames = fixed_charge_frames(rng, n=2)
    frames[1].info["esp_sigma"] = 0.02  # a per-structure override
    path = write_fit(tmp_path, frames, SOAP + 'covariance_type = "dot_product"\nzeta = 2\ndelta = 0.5\n'
                     'n_sparse = 2\nsparse_method = "random"\n', esp_sigma=0.005, total_charge_sigma=0.001)
    settings = load_toml(path)
    potential = quiet_fit(settings)
    models = potential.charge_models
    for m in models:  # arbitrary coefficients: the rows hold for any alpha
        m.alpha = rng.normal(size=m.n_sparse)
    alpha = np.concatenate([m.alpha for m in models])
    structures = [extract(a, i, settings, str(path)) for i, a in enumerate(ase.io.read(tmp_path / "train.xyz", ":"))]
    block = charge_covariance_rows(structures, models)
    row = 0
    for s, sigma_esp in zip(structures, (0.005, 0.02)):
        q = predict_charges(s.atoms, models)
        assert np.abs(q).max() > 1e-2  # not vacuous
        points = s.charges.points
        direct = np.array([sum(COULOMB * q[i] / np.sqrt(((r - s.atoms.positions[i]) ** 2).sum())
                               for i in range(len(q))) for r in points])
        K = len(points)
        np.testing.assert_allclose(block[row:row + K, :-1] @ alpha * sigma_esp, direct, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(block[row:row + K, -1] * sigma_esp, s.atoms.info["esp_values"], rtol=1e-12)
        np.testing.assert_allclose(block[row + K, :-1] @ alpha * 0.001, q.sum(), rtol=1e-12, atol=1e-12)
        assert block[row + K, -1] * 0.001 == pytest.approx(s.atoms.info["total_charge"])
        row += K + 1
    assert row == block.shape[0]


# ---- physics of the fit ---------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [1e-2, 1e-3, 1e-4])
def test_total_charge_conserved_to_its_sigma(tmp_path, rng, sigma):
    """total_charge is 0.1 e below the charge the ESP was made from, a difference within the ESP
    noise (esp_sigma = 1 V: 0.1 e shifts the ESP by ~0.4 V). A small total_charge_sigma holds the
    predicted total to within sigma of the stated one; a loose one (sigma = 10 e) lets the ESP
    win, so the row is what conserves the charge."""
    frames = fixed_charge_frames(rng, n=4, offset=-0.1)
    body = SOAP + 'covariance_type = "dot_product"\nzeta = 2\ndelta = 1.0\nn_sparse = 4\nsparse_method = "cur_points"\n'
    deviations = {}
    for s in (sigma, 10.0):
        potential = quiet_fit(load_toml(write_fit(tmp_path, frames, body, esp_sigma=1.0, total_charge_sigma=s)))
        deviations[s] = max(abs(predict_charges(a, potential.charge_models).sum() - a.info["total_charge"])
                            for a in frames)
    assert deviations[10.0] > 0.05
    assert deviations[sigma] < sigma


def test_one_sparse_point_per_element_recovers_fixed_charges(tmp_path, rng):
    """ESP from fixed element charges; a SOAP model per element with one sparse point and a
    squared-exponential kernel of huge length scale (a constant per element) recovers them exactly."""
    frames = fixed_charge_frames(rng, n=6)
    body = SOAP + 'covariance_type = "ard_se"\ntheta_uniform = 1e4\ndelta = 1.0\nn_sparse = 1\nsparse_method = "random"\n'
    potential = quiet_fit(load_toml(write_fit(tmp_path, frames, body, esp_sigma=1e-4, total_charge_sigma=1e-4,
                                              sparse_jitter=1e-12)))
    assert len(potential.charge_models) == 3 and all(m.n_sparse == 1 for m in potential.charge_models)
    assert potential.models == []  # an ESP-only fit: no energy model
    test = fixed_charge_frames(np.random.default_rng(99), n=2)  # unseen geometries
    for atoms in frames + test:
        q = predict_charges(atoms, potential.charge_models)
        np.testing.assert_allclose(q, [FIXED[z] for z in atoms.numbers], atol=1e-6)


# ---- distributed fit -------------------------------------------------------------------------

def test_distributed_charge_fit_equals_serial(tmp_path, rng):
    frames = fixed_charge_frames(rng, n=5)
    for a in frames[::2]:  # make it non-trivial: charges that are not fixed per element
        a.info["esp_values"] = a.info["esp_values"] * 1.1
    body = SOAP + 'covariance_type = "dot_product"\nzeta = 2\ndelta = 0.5\nn_sparse = 5\nsparse_method = "cur_points"\n'
    path = write_fit(tmp_path, frames, body)
    reference = quiet_fit(load_toml(path, ["solver='serial'"]))
    out = tmp_path / "alpha.npz"
    run = run_job(["mpirun", "-n", "2", "--oversubscribe", sys.executable, HERE / "mpi" / "charges_fit.py", path, out],
                  timeout=120)
    assert run.returncode == 0, run.stderr
    got = np.load(out)
    assert int(got["ranks"]) == 2
    ref = np.concatenate([m.alpha for m in reference.charge_models])
    for k, m in enumerate(reference.charge_models):
        np.testing.assert_array_equal(got[f"sparse_x{k}"], m.sparse_x)
    condition = reference.provenance["charge_condition_estimate"]
    assert condition < 1e8  # premise: rounding differences stay below the tolerance
    assert np.max(np.abs(got["alpha"] - ref)) / np.max(np.abs(ref)) < 1e-16 * condition * 100


# ---- settings ---------------------------------------------------------------------------------

def test_charge_settings_in_toml_and_gapfit_form(tmp_path):
    toml = settings_from_dict({
        "at_file": "x.xyz", "esp_sigma": 0.02, "total_charge_sigma": 1e-5,
        "charge_gap": [{"descriptor": "soap", "cutoff": 3.0, "n_max": 3, "l_max": 2, "atom_sigma": 0.5,
                        "covariance_type": "dot_product", "zeta": 2, "delta": 0.5, "n_sparse": 4}]})
    gapfit = settings_from_dict(parse_gapfit_args([
        "at_file=x.xyz", "esp_sigma=0.02", "total_charge_sigma=1e-5",
        "charge_gap={soap cutoff=3.0 n_max=3 l_max=2 atom_sigma=0.5 covariance_type=dot_product zeta=2 "
        "delta=0.5 n_sparse=4}"]))
    assert toml == gapfit
    assert toml.gap == () and toml.charge_gap[0].zeta == 2.0
    (tmp_path / "s.toml").write_text(toml.to_toml())
    assert load_toml(tmp_path / "s.toml") == toml  # the TOML written into potentials reads back
    with pytest.raises(ConfigError, match="esp_sigma"):
        settings_from_dict({"at_file": "x.xyz", "esp_sigma": 0.0, "charge_gap": toml.to_dict()["charge_gap"]})
    with pytest.raises(ConfigError, match="did you mean 'n_sparse'"):
        settings_from_dict({"at_file": "x.xyz", "charge_gap": [dict(toml.to_dict()["charge_gap"][0], nsparse=3)]})
    with pytest.raises(ConfigError, match="no model"):
        settings_from_dict({"at_file": "x.xyz", "default_sigma": [0.1, 0.1, 0.1, 0.1], "gap": []})


# ---- potential file and calculator ----------------------------------------------------------

def test_combined_energy_and_charge_fit_file_and_calculator(tmp_path, rng):
    """A fit with an energy model and a charge model: the file keeps both, the calculator returns
    energy and charges, and its ESP is the Coulomb sum of its charges. A charge-only potential
    has charges and no energy."""
    from ase.calculators.emt import EMT

    frames = fixed_charge_frames(rng, n=4)
    for a in frames:
        a.info["energy"] = EMT().get_potential_energy(a)
    energy = ('[[gap]]\ndescriptor = "distance_2b"\ncutoff = 3.0\ndelta = 1.0\ntheta_uniform = 0.5\n'
              'n_sparse = 5\nsparse_method = "uniform"\nadd_species = false\n')
    charge = SOAP + 'covariance_type = "dot_product"\nzeta = 2\ndelta = 0.5\nn_sparse = 4\nsparse_method = "random"\n'
    path = write_fit(tmp_path, frames, energy + charge, e0=0.0, default_sigma=[0.01, 0.1, 0.1, 0.0])
    potential = quiet_fit(load_toml(path))
    assert len(potential.models) == 1 and len(potential.charge_models) == 3
    potential.save(tmp_path / "both.h5")
    loaded = Potential.load(tmp_path / "both.h5")
    atoms = fixed_charge_frames(np.random.default_rng(5), n=1)[0]
    atoms.calc = GAPCalculator(loaded)
    np.testing.assert_allclose(atoms.get_charges(), predict_charges(atoms, potential.charge_models), rtol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(potential.predict(atoms)["energy"], rel=1e-12)
    points = esp_points(atoms, rng, k=7)
    np.testing.assert_allclose(atoms.calc.get_electrostatic_potential(atoms, points),
                               electrostatic_potential(points, atoms.positions, atoms.get_charges()), rtol=1e-12)

    charge_only = Potential([], {1: 0.0, 6: 0.0, 8: 0.0}, charge_models=potential.charge_models)
    charge_only.save(tmp_path / "q.h5")
    atoms.calc = GAPCalculator(tmp_path / "q.h5")
    np.testing.assert_allclose(atoms.get_charges(), predict_charges(atoms, potential.charge_models), rtol=1e-12)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_potential_energy()


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("case, key, message", [
    ("no_values", "esp_values", "'esp_points' is given but 'esp_values' is missing"),
    ("count", "esp_values", "one per point"),
    ("periodic", "esp_points", "periodic"),
    ("on_atom", "esp_points", "from an atom"),
    ("sigma", "esp_sigma", "must be positive"),
])
def test_bad_esp_input_names_file_structure_and_key(tmp_path, rng, case, key, message):
    frames = fixed_charge_frames(rng, n=3)
    bad = frames[1]
    if case == "no_values":
        del bad.info["esp_values"]
    elif case == "count":
        bad.info["esp_values"] = bad.info["esp_values"][:-1]
    elif case == "periodic":
        bad.cell = [10.0, 10.0, 10.0]
        bad.pbc = True
    elif case == "on_atom":
        points = bad.info["esp_points"].reshape(-1, 3)
        points[3] = bad.positions[2] + 0.01
        bad.info["esp_points"] = points.ravel()
    elif case == "sigma":
        bad.info["esp_sigma"] = -1.0
    body = SOAP + 'covariance_type = "dot_product"\nzeta = 2\ndelta = 0.5\nn_sparse = 2\nsparse_method = "random"\n'
    path = write_fit(tmp_path, frames, body)
    with pytest.raises(PargapError, match=message) as info:
        quiet_fit(load_toml(path))
    assert f"file {tmp_path / 'train.xyz'}, structure 1, key '{key}'" in str(info.value)


def test_charge_fit_without_esp_data_is_an_error(tmp_path, rng):
    frames = fixed_charge_frames(rng, n=2)
    for a in frames:
        for k in ("esp_points", "esp_values", "total_charge"):
            del a.info[k]
        a.info["energy"] = 0.0
    body = SOAP + 'covariance_type = "dot_product"\nzeta = 2\ndelta = 0.5\nn_sparse = 2\nsparse_method = "random"\n'
    with pytest.raises(PargapError, match="no structure has ESP data"):
        quiet_fit(load_toml(write_fit(tmp_path, frames, body)))


def test_total_charge_imposed_at_prediction(tmp_path, rng):
    """predict_charges(total_charge=Q) sums to Q exactly, changes nothing when the charges already
    sum to Q, and keeps symmetry-equivalent atoms equal (acetone's two methyl groups)."""
    frames = fixed_charge_frames(rng, n=4)
    for a in frames:
        a.info["esp_values"] = a.info["esp_values"] + 0.3  # not a neutral set of charges
    body = SOAP + 'covariance_type = "dot_product"\nzeta = 2\ndelta = 0.5\nn_sparse = 4\nsparse_method = "random"\n'
    potential = quiet_fit(load_toml(write_fit(tmp_path, frames, body, total_charge_sigma=10.0)))
    acetone = molecule("CH3COCH3")  # C2v: atoms 2, 3 (methyl C) alike, and 4, 5 and 6-9 (H)
    q = predict_charges(acetone, potential.charge_models)
    assert abs(q.sum()) > 0.05  # premise: not neutral by itself
    neutral = predict_charges(acetone, potential.charge_models, total_charge=0.0)
    assert abs(neutral.sum()) < 1e-12
    assert abs(neutral - q).max() > 0.01
    np.testing.assert_allclose(neutral[2], neutral[3], atol=1e-12)
    np.testing.assert_allclose(neutral[6:], neutral[6], atol=1e-12)
    same = predict_charges(acetone, potential.charge_models, total_charge=q.sum())
    np.testing.assert_allclose(same, q, atol=1e-14)
    acetone.calc = GAPCalculator(potential, total_charge=0.0)
    np.testing.assert_allclose(acetone.get_charges(), neutral, atol=1e-14)


def test_esp_only_fit_from_a_gapfit_command_line(tmp_path, rng):
    """pargap-fit with gap_fit-style options and a charge model only writes a potential whose
    /charge_models reproduce the charges of the fixed-charge data."""
    import h5py

    from pargap.cli.fit import main as fit_main

    ase.io.write(tmp_path / "train.xyz", fixed_charge_frames(rng, n=4), format="extxyz")
    code = fit_main(["-q", f"at_file={tmp_path / 'train.xyz'}", f"gp_file={tmp_path / 'q.h5'}", "esp_sigma=1e-4",
                     "charge_gap={soap cutoff=3 n_max=3 l_max=2 atom_sigma=0.5 covariance_type=ard_se "
                     "theta_uniform=1e4 delta=1 n_sparse=1}", "sparse_jitter=1e-12"])
    assert code == 0
    with h5py.File(tmp_path / "q.h5") as f:
        assert len(f["charge_models"]) == 3 and len(f["models"]) == 0
    atoms = fixed_charge_frames(np.random.default_rng(3), n=1)[0]
    atoms.calc = GAPCalculator(tmp_path / "q.h5")
    np.testing.assert_allclose(atoms.get_charges(), [FIXED[z] for z in atoms.numbers], atol=1e-6)


def test_charge_only_fit_refuses_the_energy_row_flags(tmp_path, rng, capsys):
    """--checkpoint, --stop-after and --optimise act on energy rows: a charge-only fit says so
    (exit 1) instead of ignoring them, and writes nothing."""
    from pargap.cli.fit import main as fit_main

    ase.io.write(tmp_path / "train.xyz", fixed_charge_frames(rng, n=2), format="extxyz")
    line = [f"at_file={tmp_path / 'train.xyz'}", f"gp_file={tmp_path / 'q.h5'}",
            "charge_gap={soap cutoff=3 n_max=3 l_max=2 atom_sigma=0.5 covariance_type=ard_se "
            "theta_uniform=1e4 delta=1 n_sparse=1}"]
    for flags in (["--checkpoint", str(tmp_path / "ck")], ["--stop-after", "10"], ["--optimise"]):
        assert fit_main(["-q", *line, *flags]) == 1
        assert f"{flags[0]}: not available for a fit with charge models only" in capsys.readouterr().err
    assert not (tmp_path / "q.h5").exists() and not (tmp_path / "ck").exists()


def test_shipped_example_data_follow_the_convention():
    """examples/charges/data: every frame reads as charge data (points in Angstrom outside the
    atoms, values in volts, neutral), and its least-squares point charges are chemically sensible
    (O between -0.9 and -0.4 e): a unit slip (Hartree, Bohr) would show there."""
    settings = settings_from_dict({"at_file": "x", "charge_gap": [{"descriptor": "soap", "cutoff": 3.0, "n_max": 2,
                                   "l_max": 1, "atom_sigma": 0.5, "covariance_type": "dot_product", "zeta": 2,
                                   "delta": 1.0, "n_sparse": 1}]})
    folder = HERE.parent / "examples" / "charges" / "data"
    for name in ("methanol", "ethanol", "acetone"):
        frames = ase.io.read(folder / f"{name}.xyz", ":")
        assert len(frames) >= 6
        for i, atoms in enumerate(frames):
            c = extract(atoms, i, settings, name, check_sigma=False).charges
            assert c.total_charge == 0.0 and len(c.esp) >= 250
            A = np.vstack([COULOMB / np.linalg.norm(c.points[:, None] - atoms.positions[None], axis=-1),
                           1e3 * np.ones(len(atoms))])  # total charge as a stiff row
            q = np.linalg.lstsq(A, np.concatenate([c.esp, [0.0]]), rcond=None)[0]
            assert np.sqrt(np.mean((A[:-1] @ q - c.esp) ** 2)) < 0.1  # V
            assert np.all((q[atoms.numbers == 8] > -0.9) & (q[atoms.numbers == 8] < -0.4))
