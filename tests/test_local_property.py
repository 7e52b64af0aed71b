"""Local-property fits (gap_fit's local_property options) against QUIP's gap_fit itself, their
per-atom prediction (GAPCalculator, pargap-eval), and angle_3b with theta_fac against gap_fit.

References: tests/data/local_property_Si.json and angle_3b_theta_fac_SiC.json, made by
tests/data/make_gapfit_references.py with the quippy-ase wheel's gap_fit (see tests/data/README.md)."""

import json
import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest

from pargap.cli.eval import main as eval_main
from pargap.fitting.fit import fit
from pargap.fitting.output import write_potential
from pargap.parallel import SerialComm
from pargap.potential.calculator import GAPCalculator
from pargap.progress import Log
from pargap.settings.config import parse_gapfit_args, settings_from_dict

DATA = Path(__file__).resolve().parent / "data"
QUIET = Log(SerialComm(), quiet=True)


def fit_line(text):
    return fit(settings_from_dict(parse_gapfit_args(text.split())), SerialComm(), QUIET)


@pytest.fixture
def reference(tmp_path, monkeypatch):
    ref = json.loads((DATA / "local_property_Si.json").read_text())
    monkeypatch.chdir(tmp_path)
    shutil.copy(DATA / "local_property_Si.xyz", tmp_path / "train.xyz")
    return ref


@pytest.mark.parametrize("layout", ["gap_fit's print_sparse_index (one line)", "one index per line"])
def test_local_property_alpha_matches_gap_fit(reference, tmp_path, layout):
    """gap_fit's own command line with sparse_method=index_file; the index file as gap_fit's
    sparsify_only_no_fit + print_sparse_index wrote it, or one index per line."""
    if layout.startswith("gap_fit"):
        shutil.copy(DATA / "local_property_index.gapfit", tmp_path / "index.txt")
    else:
        (tmp_path / "index.txt").write_text("".join(f"{i}\n" for i in reference["index"]))
    pot = fit_line(reference["config"].replace("gp_file=gp.xml", "gp_file=gp.h5"))
    (coord,) = reference["coords"]
    (model,) = pot.models
    np.testing.assert_allclose(model.sparse_x.ravel(), np.ravel(coord["sparsex"]), atol=1e-8)
    np.testing.assert_allclose(model.alpha, coord["alpha"], rtol=1e-5, atol=1e-5 * np.abs(coord["alpha"]).max() * 1e-3)
    assert pot.e0 == {14: 4.0}  # gap_fit's XML e0 = e0 (zero once local_property0 is given) + local_property0


def test_local_property_is_predicted_per_atom(reference, tmp_path):
    """The prediction is the local term of each atom plus local_property0 (by GAPCalculator, and by
    the potential's own rows); masked atoms are predicted too, and the fit reproduces the data."""
    shutil.copy(DATA / "local_property_index.gapfit", tmp_path / "index.txt")
    pot = fit_line(reference["config"].replace("gp_file=gp.xml", "gp_file=gp.h5"))
    write_potential(SerialComm(), pot, "gp.h5")
    frames = ase.io.read("train.xyz", ":")
    calc = GAPCalculator("gp.h5")
    errors = []
    for atoms in frames:
        atoms.calc = calc
        predicted = atoms.calc.get_property("local_property", atoms)
        assert predicted.shape == (len(atoms),)
        errors.append(predicted - atoms.arrays["local_property"])
        # the same number from the model rows by hand: sum over descriptors centred on each atom
        model = pot.models[0]
        d = model.descriptor.compute(atoms, gradients=False)
        k = d.weight[:, None] * model.kernel(d.x, model.sparse_x) * model.sparse_weight[None, :]
        by_hand = np.bincount(d.centre, weights=k @ model.alpha, minlength=len(atoms)) + 4.0
        np.testing.assert_allclose(predicted, by_hand, rtol=1e-12)
    rmse = np.sqrt(np.mean(np.concatenate(errors) ** 2))
    assert rmse < 0.05  # sigma 0.01 on values spread over ~0.4


def test_pargap_eval_reports_local_property_errors(reference, tmp_path, capsys):
    shutil.copy(DATA / "local_property_index.gapfit", tmp_path / "index.txt")
    pot = fit_line(reference["config"].replace("gp_file=gp.xml", "gp_file=gp.h5"))
    write_potential(SerialComm(), pot, "gp.h5")
    assert eval_main(["gp.h5", "train.xyz", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    frames = ase.io.read("train.xyz", ":")
    fitted = sum(int(a.arrays.get("local_property_mask", np.ones(len(a), bool)).sum()) for a in frames)
    assert table["all"]["local_property"]["n"] == fitted == 46  # frame 2 masks two atoms out
    assert table["all"]["local_property"]["rmse"] < 0.05


def test_a_structure_with_energy_and_local_property_is_an_error(tmp_path, monkeypatch):
    from pargap.errors import PargapError

    monkeypatch.chdir(tmp_path)
    frames = ase.io.read(DATA / "local_property_Si.xyz", ":")
    frames[3].info["energy"] = -10.0
    ase.io.write("train.xyz", frames, format="extxyz")
    (tmp_path / "index.txt").write_text("1\n2\n")
    with pytest.raises(PargapError, match="structure 3.*local_property.*not both"):
        fit_line("at_file=train.xyz gap={soap cutoff=4.0 l_max=3 n_max=4 atom_sigma=0.5 covariance_type=dot_product "
                 "zeta=2 delta=0.5 sparse_method=index_file sparse_file=index.txt} default_sigma={0.01 0.1 0.1 0.0} "
                 "e0=0.0")


def test_angle_3b_theta_fac_matches_gap_fit(tmp_path, monkeypatch):
    """angle_3b on SiC with theta_fac={0.5 0.4 0.3}: theta (from the range of all descriptors of each
    species triplet) and alpha against gap_fit; sparse points given by value (gap_fit's random ones)."""
    ref = json.loads((DATA / "angle_3b_theta_fac_SiC.json").read_text())
    monkeypatch.chdir(tmp_path)
    shutil.copy(DATA / "SiC_subset.xyz", tmp_path / "train.xyz")
    data = parse_gapfit_args(ref["config"].replace("gp_file=gp.xml", "gp_file=gp.h5").split())
    (gap,) = data["gap"]
    data["gap"] = []
    for k, coord in enumerate(ref["coords"]):
        species = dict(item.split("=") for item in coord["descriptor"].split()
                       if item.split("=")[0] in ("Z", "Z1", "Z2"))
        np.savetxt(tmp_path / f"sparse{k}.txt", np.column_stack([coord["cutoff"], coord["sparsex"]]).ravel(),
                   fmt="%.17g")
        data["gap"].append(gap | {k2: int(v) for k2, v in species.items()}
                           | {"add_species": False, "sparse_method": "file", "sparse_file": f"sparse{k}.txt"})
        data["gap"][-1].pop("n_sparse", None)
    pot = fit(settings_from_dict(data), SerialComm(), QUIET)
    assert len(pot.models) == 6
    for model, coord in zip(pot.models, ref["coords"]):
        np.testing.assert_allclose(model.kernel.theta, coord["theta"], rtol=1e-12)
        np.testing.assert_allclose(model.alpha, coord["alpha"], rtol=1e-5, atol=1e-8 * np.abs(coord["alpha"]).max())


def test_charges_fitted_as_a_local_property_are_ase_charges(reference, tmp_path):
    """A local property named like charges (here the same data under the key hirshfeld_charges) is
    also given as ASE's charges, equal to the local property."""
    frames = ase.io.read("train.xyz", ":")
    for atoms in frames:
        atoms.arrays["hirshfeld_charges"] = atoms.arrays.pop("local_property")
    ase.io.write("charges.xyz", frames, format="extxyz")
    shutil.copy(DATA / "local_property_index.gapfit", tmp_path / "index.txt")
    line = reference["config"].replace("gp_file=gp.xml", "gp_file=q.h5").replace("at_file=train.xyz",
                                                                                 "at_file=charges.xyz")
    pot = fit_line(line + " local_property_parameter_name=hirshfeld_charges")
    np.testing.assert_allclose(pot.models[0].alpha, reference["coords"][0]["alpha"], rtol=1e-5)
    write_potential(SerialComm(), pot, "q.h5")
    atoms = frames[0]
    atoms.calc = GAPCalculator("q.h5")
    np.testing.assert_array_equal(atoms.get_charges(), atoms.calc.get_property("local_property", atoms))
    with pytest.raises(Exception, match="not energies"):
        atoms.get_potential_energy()


def test_a_restarted_local_property_fit_is_still_one(reference, tmp_path):
    """The checkpoint records the kind of fit: a restart from complete rows (no structure read
    again) gives the same local-property potential."""
    shutil.copy(DATA / "local_property_index.gapfit", tmp_path / "index.txt")
    line = reference["config"].replace("gp_file=gp.xml", "gp_file=gp.h5")
    settings = settings_from_dict(parse_gapfit_args(line.split()))
    first = fit(settings, SerialComm(), QUIET, checkpoint=str(tmp_path / "ck"))
    again = fit(settings, SerialComm(), QUIET, restart=str(tmp_path / "ck"))
    assert first.local_property == again.local_property == "local_property"
    assert again.e0 == first.e0 == {14: 4.0}
    np.testing.assert_allclose(again.alpha, first.alpha, rtol=1e-12)
