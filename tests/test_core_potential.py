"""The baseline (core) potential: QUIP's glue from GAP-18's glue.xml against values derived here
from the XML tables by an independent spline solve; forces and virial against finite differences;
the pair-table format; and the fit with a core, which must recover a known GP part on top of it."""

import types
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import displaced, random_model, strained
from pargap import GAPCalculator
from pargap.baselines.core_potential import CorePotential, core_targets
from pargap.data.hessian import finite_difference_hessian, hessian_data
from pargap.descriptors.base import cutoff_function
from pargap.errors import ConfigError, InputError
from pargap.fitting.e0 import compute_e0
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.potential.potential import Potential
from pargap.progress import Log
from pargap.settings.config import parse_gapfit_args, settings_from_dict

GLUE = Path(__file__).resolve().parent / "data" / "si_gap18_subsets" / "glue.xml"
QUIET = Log(SerialComm(), quiet=True)

# potential_pair of glue.xml (Si-Si), copied by hand: the reference the spline is checked against
PAIR_R = [1.2, 1.33, 1.46, 1.59, 1.60, 1.62, 1.64, 1.66, 1.68, 1.70, 1.72, 1.74, 1.76, 1.78, 1.80,
          1.82, 1.84, 1.85, 1.86, 1.88, 1.90, 1.98, 2.11, 2.24, 2.37, 2.5]
PAIR_E = [13.4896897268455, 6.35102226195354, 2.85261290997884, 1.17069139864555, 1.074447150725763,
          0.906655292950206, 0.767927847060999, 0.653627486419334, 0.559116884386403, 0.479758714323394,
          0.410915649591501, 0.348717279587451, 0.292360857850120, 0.241810553953918, 0.197030537473260,
          0.157984977982556, 0.124638045056218, 0.11009036654669, 0.096940368680633, 0.074531168317590,
          0.056738252904286, 0.0180148277318245, 0.00107543820001212, 5.0184779157859e-06,
          8.33906077334409e-13, 0.0]
O_EMBED_RHO = [0.0, 0.007455445248, 0.017732566824, 0.030441208637, 0.056284772194, 0.074786922252]
O_EMBED_E = [-162.5696, -162.6855, -162.2040, -160.5319, -156.7397, -153.6122]
SI_DENSITY_A = [0.821917808219178 + k * 0.205479452054794 for k in range(14)]
SI_DENSITY_RHO = [0.258391, 0.173248, 0.097399, 0.050254, 0.025066, 0.012652, 0.006107, 0.003182,
                  0.001524, 0.000913, 0.000383, 0.000295, 0.000080, 0.0]


def reference_spline(x, y, slope_first=None, slope_last=None):
    """The cubic spline through (x, y) by a dense solve for the knot second derivatives m:
    continuity of the slope at inner knots; at each end either the slope given or m = 0.
    Returns f(r) for one r (linear beyond the ends, with the end slopes)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n, h = len(x), np.diff(x)
    A, b = np.zeros((n, n)), np.zeros(n)
    for k in range(1, n - 1):
        A[k, k - 1:k + 2] = h[k - 1] / 6, (h[k - 1] + h[k]) / 3, h[k] / 6
        b[k] = (y[k + 1] - y[k]) / h[k] - (y[k] - y[k - 1]) / h[k - 1]
    if slope_first is None:
        A[0, 0] = 1.0
    else:
        A[0, :2] = h[0] / 3, h[0] / 6
        b[0] = (y[1] - y[0]) / h[0] - slope_first
    if slope_last is None:
        A[-1, -1] = 1.0
    else:
        A[-1, -2:] = h[-1] / 6, h[-1] / 3
        b[-1] = slope_last - (y[-1] - y[-2]) / h[-1]
    m = np.linalg.solve(A, b)
    first = (y[1] - y[0]) / h[0] - h[0] * (2 * m[0] + m[1]) / 6
    last = (y[-1] - y[-2]) / h[-1] + h[-1] * (m[-2] + 2 * m[-1]) / 6

    def f(r):
        if r < x[0]:
            return y[0] + (r - x[0]) * first
        if r > x[-1]:
            return y[-1] + (r - x[-1]) * last
        k = min(np.searchsorted(x, r, side="right") - 1, n - 2)
        t, u = (x[k + 1] - r) / h[k], (r - x[k]) / h[k]
        return t * y[k] + u * y[k + 1] + ((t**3 - t) * m[k] + (u**3 - u) * m[k + 1]) * h[k] ** 2 / 6

    return f


@pytest.fixture(scope="module")
def glue():
    return CorePotential.from_file(str(GLUE), "IP Glue")


def dimer(symbols, r):
    direction = np.array([1.0, 0.3, -0.2]) / np.linalg.norm([1.0, 0.3, -0.2])
    return Atoms(symbols, positions=[np.zeros(3), r * direction])


def test_glue_si_dimer_matches_the_xml_table(glue):
    """Si's embedding is zero in glue.xml, so a Si dimer's energy is V(r): the knot values at the
    knots, the natural/clamped (yn=0) spline between, linear below 1.2 A, zero beyond 2.5 A."""
    V = reference_spline(PAIR_R, PAIR_E, slope_first=None, slope_last=0.0)
    for r in (1.8, 2.11, 1.5, 2.0, 2.3, 2.45, 1.0, 2.6, 3.0):
        e = glue.calculate(dimer("Si2", r), gradients=False)["energy"]
        expected = V(r) if r < 2.5 else 0.0
        assert e == pytest.approx(expected, rel=1e-10, abs=1e-12), r
    assert glue.calculate(dimer("Si2", 1.8))["energy"] == pytest.approx(0.197030537473260, rel=1e-12)


def test_glue_isolated_atoms_and_si_o_embedding(glue):
    """An isolated atom has rho = 0: E = F(0), 0 for Si and -162.5696 eV for O. A Si-O dimer has no
    pair term; E = F_O(phi_Si(r)) + F_Si(phi_O(r)) with QUIP's density c (r_c - r)^3 (c by least
    squares to the <density> points) and F_Si = 0."""
    assert glue.calculate(Atoms("Si"))["energy"] == 0.0
    assert glue.calculate(Atoms("O"))["energy"] == pytest.approx(-162.5696, abs=1e-12)
    u = (SI_DENSITY_A[-1] - np.array(SI_DENSITY_A)) ** 3
    c, *_ = np.linalg.lstsq(u[:, None], np.array(SI_DENSITY_RHO), rcond=None)
    F_O = reference_spline(O_EMBED_RHO, O_EMBED_E)
    for r in (2.0, 2.6, 3.2, 3.6):
        rho = c[0] * (SI_DENSITY_A[-1] - r) ** 3 if r < SI_DENSITY_A[-1] else 0.0
        got = glue.calculate(dimer("SiO", r), gradients=False)
        assert got["energy"] == pytest.approx(F_O(rho), rel=1e-10), r
        assert got["energies"][0] == 0.0


def test_glue_on_si_tiny_frames(glue):
    """Si_tiny (GAP-18 data): the isolated atom has zero core energy and force (so e0 is its DFT
    energy), and a compressed crystal's core energy is 1/2 sum over its pairs of V(r), with the
    pairs from ASE's neighbour list and V the independent spline of the XML table."""
    from ase.neighborlist import neighbor_list

    frames = ase.io.read(GLUE.parent / "Si_tiny.xyz", ":")
    isolated = next(a for a in frames if a.info.get("config_type") == "isolated_atom")
    out = glue.calculate(isolated)
    assert out["energy"] == 0.0 and np.all(out["forces"] == 0.0)
    V = reference_spline(PAIR_R, PAIR_E, slope_first=None, slope_last=0.0)
    checked = 0
    for atoms in frames:
        d = neighbor_list("d", atoms, 2.5)
        if len(d) == 0:
            continue
        expected = 0.5 * sum(V(r) for r in d)
        assert glue.calculate(atoms, gradients=False)["energy"] == pytest.approx(expected, rel=1e-10, abs=1e-12)
        checked += expected > 1e-3
    assert checked >= 5  # the core matters for several frames


def si_o_crystal(rng):
    atoms = bulk("Si", "diamond", a=4.3, cubic=True)
    atoms.numbers[[1, 6]] = 8
    atoms.rattle(0.12, seed=3)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
    return atoms


def pair_table_core(tmp_path):
    """Si-Si and Si-C tables of smooth functions that vanish at their last point."""
    lines = ["# test table", "pair Si Si"]
    for r in np.linspace(1.5, 3.0, 16):
        lines.append(f"{r:.4f} {2.0 * (3.0 - r) ** 2 * np.exp(-r):.10f}")
    lines.append("pair 6 14  # C-Si")
    for r in np.linspace(1.2, 2.6, 12):
        lines.append(f"{r:.4f} {(2.6 - r) ** 3 - 0.5 * (2.6 - r) ** 2:.10f}")
    path = tmp_path / "pairs.table"
    path.write_text("\n".join(lines) + "\n")
    return CorePotential.from_file(str(path), "pair_table")


def cases(tmp_path, rng, glue):
    si = bulk("Si", "diamond", a=4.6, cubic=True)  # nearest neighbours ~2 A: inside the pair range
    si.rattle(0.1, seed=1)
    sic = bulk("SiC", "zincblende", a=4.0) * (2, 1, 1)
    sic.rattle(0.1, seed=2)
    table = pair_table_core(tmp_path)
    return [(glue, si), (glue, si_o_crystal(rng)), (table, si), (table, sic),
            (glue, Atoms("Si3O", positions=[[0, 0, 0], [2.1, 0, 0], [0.3, 2.0, 0.1], [1.0, 1.0, 1.5]]))]


def test_forces_and_virial_are_energy_derivatives(tmp_path, rng, glue):
    h = 1e-5
    for core, atoms in cases(tmp_path, rng, glue):
        out = core.calculate(atoms)
        assert np.sum(out["energies"]) == pytest.approx(out["energy"], rel=1e-12, abs=1e-12)
        numeric = np.zeros_like(out["forces"])
        for a in range(len(atoms)):
            for c in range(3):
                plus, minus = displaced(atoms, a, c, h)
                numeric[a, c] = -(core.calculate(plus)["energy"] - core.calculate(minus)["energy"]) / (2 * h)
        assert np.abs(out["forces"]).max() > 0.1  # not vacuous
        np.testing.assert_allclose(out["forces"], numeric, atol=1e-6 * np.abs(numeric).max())
        np.testing.assert_allclose(out["forces"].sum(0), 0.0, atol=1e-10)
        if atoms.pbc.all():
            W = np.zeros((3, 3))
            for k in range(3):
                for l in range(3):
                    plus, minus = strained(atoms, k, l, h)
                    W[k, l] = -(core.calculate(plus)["energy"] - core.calculate(minus)["energy"]) / (2 * h)
            W = 0.5 * (W + W.T)
            assert np.abs(W).max() > 0.1
            np.testing.assert_allclose(out["virial"], W, atol=1e-6 * np.abs(W).max())


def test_pair_table_is_smooth_at_its_cutoff(tmp_path):
    table = pair_table_core(tmp_path)
    for r in (3.0 - 1e-7, 3.0 + 1e-7):
        out = table.calculate(dimer("Si2", r))
        assert abs(out["energy"]) < 1e-12 and np.abs(out["forces"]).max() < 1e-6


def test_hessian_eigenvalue_is_curvature(glue):
    atoms = Atoms("Si4", positions=[[0, 0, 0], [2.05, 0, 0], [0.2, 2.1, 0.0], [1.0, 0.9, 1.7]])
    calc = CoreCalculator(glue)
    H = finite_difference_hessian(atoms, calc, delta=1e-4)
    rng = np.random.default_rng(5)
    v = rng.normal(size=(4, 3))
    v /= np.linalg.norm(v)
    assert glue.hessian_eigenvalue(atoms, v, 1e-3) == pytest.approx(v.ravel() @ H @ v.ravel(), rel=1e-4)
    s = types.SimpleNamespace(atoms=atoms, energy=1.0, forces=None, virial=None, hessian=[(7.0, v)])
    _, _, _, hessian = core_targets(glue, s, 1e-3)
    assert hessian[0][0] == pytest.approx(7.0 - v.ravel() @ H @ v.ravel(), rel=1e-4)


class CoreCalculator:
    """Minimal ASE-style calculator around a CorePotential (for finite_difference_hessian)."""

    def __init__(self, core):
        self.core = core

    def get_forces(self, atoms):
        return self.core.calculate(atoms)["forces"]

    def get_potential_energy(self, atoms):
        return self.core.calculate(atoms)["energy"]


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.table"
    bad.write_text("pair Si Si\n1.0 1.0\n2.0 0.5\n3.0 0.1\n")
    with pytest.raises(InputError, match="must be 0 at the last point"):
        CorePotential.from_file(str(bad), "pair_table")
    bad.write_text("1.0 1.0\n")
    with pytest.raises(InputError, match="before the first"):
        CorePotential.from_file(str(bad), "pair_table")
    with pytest.raises(ConfigError, match="not supported"):
        CorePotential.from_file(str(GLUE), "IP Tersoff")
    with pytest.raises(InputError, match="not found"):
        CorePotential.from_file(str(tmp_path / "nothing.xml"), "IP Glue")


def test_gap_fit_core_options():
    line = ["at_file=x.xyz", "gap={distance_2b cutoff=4.0 delta=1 theta_uniform=1 n_sparse=5}",
            "default_sigma={0.01 0.1 0.1 0.0}"]
    s = settings_from_dict(parse_gapfit_args(line + ["core_param_file=glue.xml", "core_ip_args={IP Glue}"]))
    assert (s.core_param_file, s.core_ip_args) == ("glue.xml", "IP Glue")
    s = settings_from_dict(parse_gapfit_args(line + ["baseline_ip_args={IP Glue}"]))
    assert s.core_param_file == "quip_params.xml"  # gap_fit's default file
    assert 'core_ip_args = "IP Glue"' in s.to_toml()
    with pytest.raises(ConfigError, match="core_ip_args"):
        settings_from_dict(parse_gapfit_args(line + ["core_param_file=glue.xml"]))
    with pytest.raises(ConfigError, match="not supported"):
        settings_from_dict(parse_gapfit_args(line + ["core_ip_args={IP SW}"]))


def test_e0_subtracts_the_core_energy_of_isolated_atoms(glue):
    """gap_fit: e0(Z) = E(isolated atom) - E_core(isolated atom); glue.xml gives an O atom -162.5696."""
    settings = settings_from_dict({"at_file": "x.xyz", "default_sigma": [0.01, 0.1, 0.1, 0.0], "gap": [
        {"descriptor": "distance_2b", "cutoff": 4.0, "delta": 1.0, "theta_uniform": 1.0, "n_sparse": 5}]})
    frames = [types.SimpleNamespace(index=k, atoms=Atoms(sym), energy=e, n_atoms=1)
              for k, (sym, e) in enumerate([("O", -160.0), ("Si", -158.5)])]
    e0 = compute_e0(SerialComm(), settings, frames, [8, 14], core=glue)
    assert e0[8] == pytest.approx(-160.0 + 162.5696) and e0[14] == pytest.approx(-158.5)


def labelled_frames(rng, truth):
    """Si structures (bulk with short bonds, clusters, an isolated atom, Hessian data) labelled by
    ``truth`` (a Potential: e0 + core + GP)."""
    frames = [Atoms("Si", positions=[[0.0, 0.0, 0.0]])]
    for k in range(5):
        atoms = bulk("Si", "diamond", a=rng.uniform(4.5, 5.0), cubic=True)
        atoms.rattle(0.15, seed=k)
        frames.append(atoms)
    for k in range(6):
        n = 3 + k % 3
        pos = [np.zeros(3)]
        while len(pos) < n:
            p = rng.normal(0, 1.6, 3)
            if min(np.linalg.norm(p - q) for q in pos) > 1.9:
                pos.append(p)
        frames.append(Atoms(f"Si{n}", positions=pos))
    out = []
    for atoms in frames:
        atoms.calc = GAPCalculator(truth)
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        if atoms.pbc.all():
            atoms.info["virial"] = -atoms.get_stress(voigt=False) * atoms.get_volume()
        atoms.calc = None
        out.append(atoms)
    out.append(hessian_data(frames[1], GAPCalculator(truth), n_modes=6))  # bulk: short bonds, core matters
    return out


def test_fit_with_core_recovers_the_gp_part(tmp_path, rng, glue):
    """Data = e0 + glue core + a known distance_2b GP. Fitted with the core and the GP's own sparse
    points, the coefficients come back and predictions (core added back) match held-out
    structures; fitted without the core, they do not."""
    gp = random_model(rng, 14, 14, M=8, cutoff=4.0)
    gp.sparse_x = np.linspace(1.9, 3.7, 8)[:, None]  # well separated, so alpha is identifiable
    gp.sparse_weight = cutoff_function(gp.sparse_x[:, 0], 4.0, 1.0)[0]
    truth = Potential([gp], {14: -158.5}, core=glue)
    frames = labelled_frames(rng, truth)
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    sparse = tmp_path / "sparse.txt"
    sparse.write_text("".join(f"{w!r}\n{x!r}\n" for w, x in zip(gp.sparse_weight, gp.sparse_x[:, 0])))
    glue_file = tmp_path / "glue.xml"
    glue_file.write_text(GLUE.read_text())
    common = {"at_file": str(tmp_path / "train.xyz"), "default_sigma": [1e-5, 1e-5, 1e-5, 1e-5],
              "sparse_jitter": 1e-12, "hessian_delta": 1e-3, "gp_file": str(tmp_path / "pot.h5"),
              "gap": [{"descriptor": "distance_2b", "cutoff": 4.0, "cutoff_transition_width": 1.0, "delta": 1.0,
                       "theta_uniform": 0.4, "sparse_method": "file", "sparse_file": str(sparse)}]}
    pot = fit(settings_from_dict(common | {"core_param_file": str(glue_file), "core_ip_args": "IP Glue"}), log=QUIET)
    assert pot.e0[14] == pytest.approx(-158.5, abs=1e-9)
    np.testing.assert_allclose(pot.models[0].alpha, gp.alpha, rtol=1e-4, atol=1e-4 * np.abs(gp.alpha).max())
    pot.save(tmp_path / "pot.h5")
    loaded = Potential.load(tmp_path / "pot.h5")
    assert loaded.core is not None and loaded.core.kind == "glue" and loaded.core.text == GLUE.read_text()
    held_out = bulk("Si", "diamond", a=4.55, cubic=True)
    held_out.rattle(0.2, seed=99)
    want = truth.predict(held_out)
    core_part = glue.calculate(held_out)
    assert abs(core_part["energy"]) > 0.5  # the core matters here
    for p in (pot, loaded):
        got = p.predict(held_out)
        for key in ("energy", "energies", "forces", "virial"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-4)
    plain = fit(settings_from_dict(common), log=QUIET)
    assert abs(plain.predict(held_out)["energy"] - want["energy"]) > 0.1


def test_gap_fit_long_option_names_and_case():
    """gap_fit's own option names (its altkeys are the short ones) and its case-insensitive
    covariance_type / sparse_method values ('Gaussian' is ard_se) read as the short forms."""
    s = settings_from_dict(parse_gapfit_args([
        "atoms_filename=x.xyz", "gap_file=y.h5", "default_kernel_regularisation={0.01 0.1 0.1 0.0}",
        "config_type_kernel_regularisation={liq:0.003:0.15:0.2:0.0}", "kernel_regularisation_is_per_atom=F",
        "kernel_regularisation_parameter_name=s", "hessian_displacement=0.02",
        "gap={distance_2b cutoff=4.0 energy_scale=1 lengthscale_uniform=0.5 covariance_type=Gaussian "
        "sparse_method=UNIFORM n_sparse=5}"]))
    assert (s.at_file, s.gp_file, s.default_sigma, s.sigma_per_atom, s.sigma_parameter_name, s.hessian_delta) == (
        "x.xyz", "y.h5", (0.01, 0.1, 0.1, 0.0), False, "s", 0.02)
    assert s.config_type_sigma == {"liq": (0.003, 0.15, 0.2, 0.0)}
    g = s.gap[0]
    assert (g.covariance_type, g.sparse_method, g.theta_uniform, g.delta) == ("ard_se", "uniform", 0.5, 1.0)


def test_gap_fit_line_with_pair_table_core_on_two_ranks(tmp_path, rng):
    """The gap_fit form with a pair-table core under mpirun -n 2: the same coefficients as the
    serial fit, and the written file carries the core."""
    import sys

    from conftest import run_job

    core = pair_table_core(tmp_path)
    gp = random_model(rng, 14, 14, M=8, cutoff=4.0)
    frames = labelled_frames(rng, Potential([gp], {14: -158.5}, core=core))
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    line = [f"at_file={tmp_path / 'train.xyz'}", f"gp_file={tmp_path / 'mpi.h5'}", "rnd_seed=3",
            "gap={distance_2b cutoff=4.0 cutoff_transition_width=1.0 delta=1.0 theta_uniform=0.4 "
            "n_sparse=8 sparse_method=cur_points}", "default_sigma={0.001 0.01 0.01 0.01}", "sparse_jitter=1e-4",
            f"core_param_file={tmp_path / 'pairs.table'}", "core_ip_args=pair_table"]
    job = run_job(["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-m", "pargap.cli.fit", "-q", *line],
                  timeout=120)
    assert job.returncode == 0, job.stderr
    serial = fit(settings_from_dict(parse_gapfit_args(line)), log=QUIET)
    parallel = Potential.load(tmp_path / "mpi.h5")
    assert parallel.core.kind == "pair_table" and parallel.core.text == (tmp_path / "pairs.table").read_text()
    np.testing.assert_allclose(parallel.alpha, serial.alpha, rtol=1e-7, atol=1e-9)
    atoms = frames[2]
    np.testing.assert_allclose(parallel.predict(atoms)["forces"], serial.predict(atoms)["forces"], atol=1e-8)
