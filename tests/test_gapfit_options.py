"""Every gap_fit command-line option (tests/data/gap_fit_options.txt, from ``gap_fit --help`` of
QUIP 0.10.3) runs in pargap-fit with a valid value, and the options with a meaning do what
gap_fit's do: config_file, parameter_name_prefix, hessian_parameter_name, force_mask_parameter_name,
sparsify_only_no_fit, export_covariance, linear_system_dump_file, template_file, dryrun, verbosity,
the ignored MPI/OpenMP options, both layouts of sparse-index files, and the gap={} options
theta_fac, theta_file, unique_*_tolerance and config_type_n_sparse."""

import shutil
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
import scipy.linalg

from conftest import small_lj_frames
from pargap.cli.fit import main as fit_main
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.potential.potential import Potential
from pargap.progress import Log
from pargap.settings.config import parse_gapfit_args, settings_from_dict

DATA = Path(__file__).resolve().parent / "data"
OPTIONS = [line.split()[0] for line in (DATA / "gap_fit_options.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
QUIET = Log(SerialComm(), quiet=True)

GAP = ("{distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=1.0 "
       "theta_uniform=0.5 n_sparse=8 sparse_method=uniform}")
BASE = {"at_file": "train.xyz", "gap": GAP, "default_sigma": "{0.01 0.1 0.1 0.0}", "e0": "0.0",
        "rnd_seed": "1", "gp_file": "gp.h5"}
SAME = {"atoms_filename": "at_file", "gap_file": "gp_file", "default_kernel_regularisation": "default_sigma",
        "e0_method": "e0"}  # an option that replaces a key of BASE
PAIR_TABLE = "pair Ar Ar\n2.0 0.3\n3.0 0.05\n4.0 0.0\n"

# option -> (value, extra tokens, what the fit must have produced)
VALUES = {
    "at_file": ("train.xyz", (), "potential"),
    "atoms_filename": ("train.xyz", (), "potential"),
    "baseline_ip_args": ("pair_table", (), "potential"),  # core file: gap_fit's default quip_params.xml
    "baseline_param_filename": ("core.table", ("core_ip_args=pair_table",), "potential"),
    "condition_number_norm": ("O", (), "potential"),
    "config_file": ("options.txt", (), "potential"),
    "config_type_kernel_regularisation": ("{bulk:0.02:0.2:0.2:0.0}", (), "potential"),
    "config_type_parameter_name": ("config_type", (), "potential"),
    "config_type_sigma": ("{bulk:0.02:0.2:0.2:0.0}", (), "potential"),
    "core_ip_args": ("pair_table", (), "potential"),
    "core_param_file": ("core.table", ("core_ip_args=pair_table",), "potential"),
    "default_kernel_regularisation": ("{0.01 0.1 0.1 0.0}", (), "potential"),
    "default_kernel_regularisation_local_property": ("0.01", (), "potential"),
    "default_local_property_sigma": ("0.01", (), "potential"),
    "default_sigma": ("{0.01 0.1 0.1 0.0}", (), "potential"),
    "do_copy_at_file": ("F", (), "potential"),
    "do_copy_atoms_file": ("F", (), "potential"),
    "do_ip_timing": ("T", (), "potential"),
    "dryrun": ("T", (), "nothing"),
    "e0": ("{Ar:0.0}", (), "potential"),
    "e0_method": ("average", (), "potential"),
    "e0_offset": ("0.1", (), "potential"),
    "energy_parameter_name": ("energy", (), "potential"),
    "export_covariance": ("T", (), "covariance"),
    "force_mask_parameter_name": ("fixed", (), "potential"),
    "force_parameter_name": ("forces", (), "potential"),
    "gap": (GAP, (), "potential"),
    "gap_file": ("other.h5", (), "other.h5"),
    "gp_file": ("other.h5", (), "other.h5"),
    "hessian_delta": ("0.02", (), "potential"),
    "hessian_displacement": ("0.02", (), "potential"),
    "hessian_parameter_name": ("hessian", (), "potential"),
    "kernel_regularisation_is_per_atom": ("F", (), "potential"),
    "kernel_regularisation_parameter_name": ("sigma", (), "potential"),
    "linear_system_dump_file": ("dump.h5", (), "dump.h5"),
    "local_property0": ("0.0", (), "potential"),
    "local_property_mask_parameter_name": ("local_property_mask", (), "potential"),
    "local_property_parameter_name": ("local_property", (), "potential"),
    "mpi_blocksize_cols": ("100", (), "potential"),
    "mpi_blocksize_rows": ("0", (), "potential"),
    "mpi_print_all": ("F", (), "potential"),
    "openmp_chunk_size": ("0", (), "potential"),
    "parameter_name_prefix": ("dft_", (), "potential"),
    "rnd_seed": ("3", (), "potential"),
    "sigma_parameter_name": ("sigma", (), "potential"),
    "sigma_per_atom": ("F", (), "potential"),
    "sparse_jitter": ("1.0e-8", (), "potential"),
    "sparse_separate_file": ("F", (), "potential"),
    "sparse_use_actual_gpcov": ("T", (), "potential"),
    "sparsify_only_no_fit": ("T", (), "gp.h5.sparseX.0"),
    "stress_parameter_name": ("stress", (), "potential"),
    "template_file": ("template.xyz", (), "potential"),
    "verbosity": ("VERBOSE", (), "potential"),
    "virial_parameter_name": ("virial", (), "potential"),
}


def write_frames(path, prefix=""):
    """small_lj_frames with config_type bulk/cluster; keys energy and forces (with a prefix)."""
    frames = []
    for atoms in small_lj_frames():
        out = atoms.copy()
        out.info[prefix + "energy"] = atoms.get_potential_energy()
        out.arrays[prefix + "forces"] = atoms.get_forces()
        out.info[prefix + "config_type"] = "bulk" if atoms.pbc.all() else "cluster"
        frames.append(out)
    ase.io.write(path, frames, format="extxyz")
    return frames


def line(**options):
    return [f"{k}={v}" for k, v in (BASE | options).items()]


def test_the_list_has_gap_fits_54_options():
    assert len(OPTIONS) == len(set(OPTIONS)) == 54
    assert set(OPTIONS) == set(VALUES)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_gap_fit_option_runs(option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    value, extra, produced = VALUES[option]
    write_frames(tmp_path / "train.xyz", prefix="dft_" if option == "parameter_name_prefix" else "")
    (tmp_path / "core.table").write_text(PAIR_TABLE)
    (tmp_path / "quip_params.xml").write_text(PAIR_TABLE)
    ase.io.write(tmp_path / "template.xyz", small_lj_frames()[1], format="extxyz")
    options = {k: v for k, v in BASE.items() if k != SAME.get(option)} | {option: value}
    tokens = [f"{k}={v}" for k, v in options.items()] + list(extra)
    if option == "config_file":
        (tmp_path / "options.txt").write_text("\n".join(line()) + "\n")
        tokens = ["config_file=options.txt"]
    assert fit_main(tokens) == 0, capsys.readouterr().err
    outputs = {"potential": "gp.h5", "covariance": "gp.h5", "nothing": None}
    expected = outputs.get(produced, produced)
    if expected:
        assert (tmp_path / expected).exists()
    if produced == "nothing" or produced.startswith("gp.h5.sparseX"):
        assert not (tmp_path / "gp.h5").exists()
    if produced == "covariance":
        with h5py.File(tmp_path / "gp.h5") as f:
            assert "gp" in f


def fit_line(tokens):
    return fit(settings_from_dict(parse_gapfit_args(tokens)), SerialComm(), QUIET)


# ---- options with a meaning --------------------------------------------------------------------

def test_config_file_newlines_are_spaces_and_the_rest_of_the_line_is_ignored(tmp_path, monkeypatch):
    """gap_fit reads only the file when config_file is given."""
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    (tmp_path / "options.txt").write_text("\n".join(line()) + "\n")
    notes = []
    from_file = settings_from_dict(parse_gapfit_args(["config_file=options.txt", "sparse_jitter=0.5"], notes))
    direct = settings_from_dict(parse_gapfit_args(line()))
    assert from_file == direct
    assert any("sparse_jitter" in n and "ignored" in n for n in notes)


def test_config_file_missing_is_an_error_naming_it(tmp_path, monkeypatch):
    from pargap.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="nope.txt"):
        parse_gapfit_args(["config_file=nope.txt"])


def test_parameter_name_prefix_is_put_before_every_key_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "plain.xyz")
    write_frames(tmp_path / "prefixed.xyz", prefix="dft_")
    plain = fit_line(line(at_file="plain.xyz"))
    prefixed = fit_line(line(at_file="prefixed.xyz", parameter_name_prefix="dft_"))
    np.testing.assert_allclose(prefixed.alpha, plain.alpha, rtol=1e-12)
    s = settings_from_dict(parse_gapfit_args(line(parameter_name_prefix="dft_", energy_parameter_name="E")))
    assert (s.energy_parameter_name, s.hessian_parameter_name, s.sigma_parameter_name) == ("dft_E", "dft_hessian",
                                                                                          "dft_sigma")


def hessian_frames(key):
    """Two Ar clusters with Hessian data under the key ``key`` (n_<key>, <key>1, ...)."""
    frames = write_frames(Path("train.xyz"))
    rng = np.random.default_rng(0)
    for atoms in frames[-2:]:
        atoms.info[f"n_{key}"] = 2
        for k in (1, 2):
            atoms.info[f"{key}{k}"] = float(rng.uniform(0.5, 2.0))
            atoms.arrays[f"{key}{k}"] = rng.normal(size=(len(atoms), 3))
    return frames


def test_hessian_parameter_name_names_the_hessian_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ase.io.write("hessian.xyz", hessian_frames("hessian"), format="extxyz")
    ase.io.write("curv.xyz", hessian_frames("curv"), format="extxyz")
    sigma = "{0.01 0.1 0.1 0.05}"
    default = fit_line(line(at_file="hessian.xyz", default_sigma=sigma))
    named = fit_line(line(at_file="curv.xyz", default_sigma=sigma, hessian_parameter_name="curv"))
    without = fit_line(line(at_file="curv.xyz", default_sigma=sigma))
    np.testing.assert_allclose(named.alpha, default.alpha, rtol=1e-12)
    assert not np.allclose(without.alpha, default.alpha, rtol=1e-6)


def test_masked_force_components_leave_the_fit(tmp_path, monkeypatch):
    """Forces of masked atoms have no influence: garbage there gives the same coefficients."""
    monkeypatch.chdir(tmp_path)
    frames = write_frames(Path("train.xyz"))
    mask = [np.arange(len(a)) < 2 for a in frames]
    for atoms, m in zip(frames, mask):
        atoms.arrays["fixed"] = m
    ase.io.write("masked.xyz", frames, format="extxyz")
    for atoms, m in zip(frames, mask):
        atoms.arrays["forces"][m] = 100.0
    ase.io.write("garbage.xyz", frames, format="extxyz")
    masked = fit_line(line(at_file="masked.xyz", force_mask_parameter_name="fixed"))
    garbage = fit_line(line(at_file="garbage.xyz", force_mask_parameter_name="fixed"))
    unmasked = fit_line(line(at_file="masked.xyz"))
    np.testing.assert_allclose(garbage.alpha, masked.alpha, rtol=1e-10)
    assert not np.allclose(unmasked.alpha, masked.alpha, rtol=1e-6)


def test_sparsify_only_writes_file_form_sparse_points_that_reproduce_the_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    assert fit_main(line(sparsify_only_no_fit="T", gap=GAP[:-1] + " print_sparse_index=idx.txt}") + ["-q"]) == 0
    assert not (tmp_path / "gp.h5").exists()
    assert len((tmp_path / "idx.txt").read_text().splitlines()) == 1  # gap_fit's layout: one line
    direct = fit_line(line())
    from_file = fit_line(line(gap=GAP.replace("sparse_method=uniform",
                                              "sparse_method=file sparse_file=gp.h5.sparseX.0")))
    from_index = fit_line(line(gap=GAP.replace("sparse_method=uniform",
                                               "sparse_method=index_file sparse_file=idx.txt")))
    np.testing.assert_allclose(from_file.alpha, direct.alpha, rtol=1e-10)
    np.testing.assert_allclose(from_index.alpha, direct.alpha, rtol=1e-10)


def test_index_files_are_read_in_both_layouts(tmp_path):
    from pargap.fitting.sparsify import read_index_file

    (tmp_path / "lines").write_text("3\n1\n7\n")
    (tmp_path / "one").write_text("3 1 7\n")
    (tmp_path / "mixed").write_text("3 1\n7\n\n")
    for name in ("lines", "one", "mixed"):
        np.testing.assert_array_equal(read_index_file(tmp_path / name, "model 0"), [1, 3, 7])


def test_linear_system_dump_reproduces_the_coefficients(tmp_path, monkeypatch):
    """The dumped rows Lambda^-1/2 [K_NM | y] and K_MM solve to the fit's alpha."""
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    pot = fit_line(line(linear_system_dump_file="dump.h5", sparse_jitter="1e-6"))
    with h5py.File("dump.h5") as f:
        A, b, K_mm = f["A"][()], f["b"][()], f["K_MM"][()]
        assert f["row_structure"].shape == b.shape
    U = scipy.linalg.cholesky(K_mm)
    alpha = scipy.linalg.lstsq(np.vstack([A, U]), np.concatenate([b, np.zeros(len(U))]))[0]
    np.testing.assert_allclose(alpha, pot.alpha, rtol=1e-7, atol=1e-9 * np.abs(alpha).max())


def test_template_file_must_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    assert fit_main(line(template_file="missing.xyz") + ["-q"]) == 1
    assert "missing.xyz" in capsys.readouterr().err


def test_dryrun_is_the_dry_run_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    assert fit_main(line() + ["--dry-run"]) == 0
    flag = capsys.readouterr().out
    assert fit_main(line(dryrun="T")) == 0
    option = capsys.readouterr().out
    assert option == flag and "peak" in flag.lower()
    assert not (tmp_path / "gp.h5").exists()


def test_verbosity_levels(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    counts = {}
    for level in ("NORMAL", "VERBOSE", "NERD", "ANALYSIS"):
        assert fit_main(line(verbosity=level)) == 0
        counts[level] = len(capsys.readouterr().out.splitlines())
    assert counts["NORMAL"] < counts["VERBOSE"] <= counts["NERD"] == counts["ANALYSIS"]
    assert fit_main(line(verbosity="LOUD")) == 1
    assert "verbosity" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["mpi_blocksize_rows=4", "mpi_blocksize_cols=100", "openmp_chunk_size=2",
                                    "mpi_print_all=T", "do_ip_timing=T"])
def test_ignored_options_say_so_once(option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    assert fit_main(line() + [option]) == 0
    said = [x for x in capsys.readouterr().out.splitlines() if option.split("=")[0] in x]
    assert len(said) == 1 and "ignored" in said[0]


# ---- gap={...} options ---------------------------------------------------------------------------

def gap_line(**gap):
    fields = dict(cutoff=5.0, cutoff_transition_width=1.0, covariance_type="ard_se", delta=1.0, n_sparse=8,
                  sparse_method="uniform") | gap
    return line(gap="{distance_2b " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None) + "}")


def test_theta_file_and_theta_fac_give_the_same_fit(tmp_path, monkeypatch):
    """theta_fac: theta = fac * (max - min) of all descriptors; a theta_file with that number fits alike."""
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    frames = ase.io.read("train.xyz", ":")
    by_fac = fit_line(gap_line(theta_fac=0.3))
    from ase.neighborlist import neighbor_list

    d = np.concatenate([neighbor_list("d", a, 5.0) for a in frames])
    theta = 0.3 * (d.max() - d.min())
    np.testing.assert_allclose(by_fac.models[0].kernel.theta, [theta], rtol=1e-10)
    Path("theta.txt").write_text(f"{theta!r}\n")
    by_file = fit_line(gap_line(theta_file="theta.txt"))
    uniform = fit_line(gap_line(theta_uniform=theta))
    np.testing.assert_allclose(by_file.alpha, by_fac.alpha, rtol=1e-10)
    np.testing.assert_allclose(uniform.alpha, by_fac.alpha, rtol=1e-10)


def test_theta_settings_are_exclusive_and_sized(tmp_path, monkeypatch):
    from pargap.errors import ConfigError, PargapError

    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    with pytest.raises(ConfigError, match="theta"):
        settings_from_dict(parse_gapfit_args(gap_line(theta_fac=0.3, theta_uniform=1.0)))
    with pytest.raises(PargapError, match="theta_fac has 2 values"):
        fit_line(gap_line(theta_fac="{0.3:0.2}"))  # distance_2b: 1 dimension
    Path("theta.txt").write_text("0.5 0.4\n")
    with pytest.raises(PargapError, match="theta.txt"):
        fit_line(gap_line(theta_file="theta.txt"))


def test_theta_fac_in_single_braces_is_read_as_gap_fit_reads_it():
    """gap_fit drops the braces of {0.5 0.4 0.3} with those of its entry and takes theta_fac=0.5
    (checked with gap_fit 0.10.3: its theta is then 0.5 x the range in every dimension)."""
    notes = []
    data = parse_gapfit_args(["gap={angle_3b cutoff=3.0 delta=1.0 theta_fac={0.5 0.4 0.3} n_sparse=5}"], notes)
    assert data["gap"][0]["theta_fac"] == [0.5]
    assert any("theta_fac={0.5:0.4:0.3}" in n for n in notes)
    data = parse_gapfit_args(["gap={angle_3b cutoff=3.0 delta=1.0 theta_fac={0.5:0.4:0.3} n_sparse=5}"])
    assert data["gap"][0]["theta_fac"] == [0.5, 0.4, 0.3]


def test_unique_descriptor_tolerance_merges_close_descriptors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    exact = fit_line(gap_line(theta_uniform=0.5, sparse_method="none"))
    merged = fit_line(gap_line(theta_uniform=0.5, sparse_method="none", unique_descriptor_tolerance=0.05,
                               unique_hash_tolerance=0.05))
    assert merged.models[0].n_sparse < exact.models[0].n_sparse
    x = np.sort(merged.models[0].sparse_x[:, 0])
    assert np.all(np.diff(x) >= 0.0)


def test_config_type_n_sparse_picks_per_config_type(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    frames = ase.io.read("train.xyz", ":")
    pot = fit_line(gap_line(theta_uniform=0.5, n_sparse=None, sparse_method="random",
                            config_type_n_sparse="{bulk:5:cluster:3}"))
    assert pot.models[0].n_sparse == 8
    from ase.neighborlist import neighbor_list

    bulk = np.concatenate([neighbor_list("d", a, 5.0) for a in frames if a.pbc.all()])
    cluster = np.concatenate([neighbor_list("d", a, 5.0) for a in frames if not a.pbc.all()])
    x = pot.models[0].sparse_x[:, 0]
    in_bulk = np.isclose(x[:, None], bulk[None, :], rtol=0, atol=1e-12).any(1)
    in_cluster = np.isclose(x[:, None], cluster[None, :], rtol=0, atol=1e-12).any(1)
    assert in_bulk.sum() >= 5 and in_cluster.sum() >= 3


def test_sparse_use_actual_gpcov_makes_farthest_point_use_the_kernel_distance():
    """With an ard_se kernel the kernel distance grows with |x - s| scaled by theta, so farthest-point
    sampling in it picks what Euclidean sampling of x / theta picks, not what it picks on x."""
    from pargap.fitting.sparsify import DescriptorPool, select_sparse
    from pargap.gp.kernels import SquaredExponential

    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (60, 2))
    theta = np.array([1.0, 0.3])  # scaled distances stay O(1): no saturation of exp(-r^2/2)
    structure = np.repeat(np.arange(6), 10)
    pool = DescriptorPool(x, np.ones(60), structure)
    kernel = SquaredExponential(delta=1.0, theta=theta)
    by_kernel = select_sparse(SerialComm(), pool, method="farthest_point", n_sparse=8, kernel=kernel)[2]
    scaled = select_sparse(SerialComm(), DescriptorPool(x / theta, np.ones(60), structure),
                           method="farthest_point", n_sparse=8)[2]
    plain = select_sparse(SerialComm(), pool, method="farthest_point", n_sparse=8)[2]
    np.testing.assert_array_equal(by_kernel, scaled)
    assert set(by_kernel) != set(plain)


def test_every_option_has_a_row_in_the_migration_table():
    text = (Path(__file__).resolve().parents[1] / "docs" / "migration.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")}
    assert set(OPTIONS) <= rows
    for option in ("theta_fac", "theta_file", "config_type_n_sparse", "unique_hash_tolerance"):
        assert f"`{option}`" in text


# ---- under MPI ---------------------------------------------------------------------------------

MPI_TIMEOUT = 180


def _alpha(path):
    with h5py.File(path, "r") as f:
        return np.concatenate([f["models"][k]["alpha"][()] for k in sorted(f["models"], key=int)])


def test_options_on_two_ranks_equal_one(tmp_path, monkeypatch):
    """theta_fac (a range over all ranks' descriptors), config_type_n_sparse, the linear-system dump
    (written with parallel HDF5) and sparsify_only_no_fit give on 2 ranks what they give on one."""
    import sys

    from conftest import run_job

    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "train.xyz")
    tokens = gap_line(theta_fac=0.3, n_sparse=None, sparse_method="random", config_type_n_sparse="{bulk:5:cluster:3}")
    serial = fit_line(tokens + ["linear_system_dump_file=dump1.h5"])
    mpirun = ["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-m", "pargap.cli.fit", "-q"]
    run = run_job(mpirun + tokens + ["linear_system_dump_file=dump2.h5", "gp_file=gp2.h5"], cwd=tmp_path,
                  timeout=MPI_TIMEOUT)
    assert run.returncode == 0, run.stderr
    # the same problem, QR'd in another row order: equal to rounding (|alpha| ~ 1e3 here)
    np.testing.assert_allclose(_alpha(tmp_path / "gp2.h5"), serial.alpha, rtol=0,
                               atol=1e-8 * np.abs(serial.alpha).max())
    with h5py.File("dump1.h5") as one, h5py.File("dump2.h5") as two:
        np.testing.assert_array_equal(one["K_MM"][()], two["K_MM"][()])
        order1, order2 = np.lexsort(one["A"][()].T), np.lexsort(two["A"][()].T)
        np.testing.assert_allclose(one["A"][()][order1], two["A"][()][order2], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(one["b"][()][order1], two["b"][()][order2], rtol=1e-12, atol=1e-14)
    run = run_job(mpirun + tokens + ["sparsify_only_no_fit=T", "gp_file=sp.h5"], cwd=tmp_path, timeout=MPI_TIMEOUT)
    assert run.returncode == 0, run.stderr
    x = np.loadtxt(tmp_path / "sp.h5.sparseX.0").reshape(-1, 2)
    np.testing.assert_array_equal(x[:, 1:], serial.models[0].sparse_x)


def test_local_property_fit_on_two_ranks_matches_gap_fit(tmp_path):
    import json
    import sys

    from conftest import run_job

    ref = json.loads((DATA / "local_property_Si.json").read_text())
    shutil.copy(DATA / "local_property_Si.xyz", tmp_path / "train.xyz")
    shutil.copy(DATA / "local_property_index.gapfit", tmp_path / "index.txt")
    line_ = ref["config"].replace("gp_file=gp.xml", "gp_file=gp.h5").split()
    run = run_job(["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-m", "pargap.cli.fit", "-q", *line_],
                  cwd=tmp_path, timeout=MPI_TIMEOUT)
    assert run.returncode == 0, run.stderr
    alpha = np.asarray(ref["coords"][0]["alpha"])
    np.testing.assert_allclose(_alpha(tmp_path / "gp.h5"), alpha, rtol=1e-5, atol=1e-8 * np.abs(alpha).max())


def test_the_new_settings_survive_the_toml_round_trip(tmp_path, monkeypatch):
    """--print-config turns a line with the new options into TOML that loads to the same settings."""
    import tomllib

    monkeypatch.chdir(tmp_path)
    Path("theta.txt").write_text("0.5\n")
    tokens = line(parameter_name_prefix="dft_", hessian_parameter_name="curv", local_property0="{Si:0.5:C:-0.2}",
                  default_local_property_sigma="0.02", export_covariance="T", linear_system_dump_file="d.h5",
                  verbosity="nerd", sparse_use_actual_gpcov="T", template_file="t.xyz",
                  gap="{distance_2b cutoff=4.0 delta=1.0 theta_fac={0.2} config_type_n_sparse={bulk:3:cluster:2} "
                      "sparse_method=random unique_hash_tolerance=1e-8 unique_descriptor_tolerance=1e-9 : "
                      "distance_2b cutoff=3.0 delta=1.0 theta_file=theta.txt n_sparse=4}")
    settings = settings_from_dict(parse_gapfit_args(tokens))
    assert settings.energy_parameter_name == "dft_energy" and settings.hessian_parameter_name == "dft_curv"
    assert settings.local_property0 == {"Si": 0.5, "C": -0.2} and settings.store_covariance is True
    assert settings.verbosity == "NERD" and settings.gap[0].config_type_n_sparse == {"bulk": 3, "cluster": 2}
    again = settings_from_dict(tomllib.loads(settings.to_toml()))
    assert again == settings
