"""Top of the pyramid: gap_fit's own regression fits (QUIP tests/, in tests/data), run from
their command lines, with QUIP's tolerances: sparse descriptors 1e-8, coefficients 1e-5.
SOAP sparse points are chosen by gap_fit's own indices (index_file). distance_2b descriptors are
enumerated differently from QUIP's neighbour order, so their sparse points are given by value
(sparse_method=file: weight, then the value, per point), which the issue allows."""

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pargap.settings.config import parse_gapfit_args, settings_from_dict
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.progress import Log

DATA = Path(__file__).resolve().parent / "data" / "quip_gapfit_regression"


def run_gapfit_line(name, tmp_path, monkeypatch):
    ref = json.loads(gzip.decompress((DATA / f"{name}.json.gz").read_bytes()))
    monkeypatch.chdir(tmp_path)
    os.symlink(DATA / ref["config"].split("at_file=")[1].split()[0], tmp_path / "train.xyz")
    entries = []
    for k, coord in enumerate(ref["coords"]):
        sx = np.array(coord["sparsex"]).reshape(len(coord["alpha"]), -1)
        np.savetxt(tmp_path / f"sparse{k}.txt", np.column_stack([coord["cutoff"], sx]).ravel(), fmt="%.17g")
        entries.append(k)
    line = ref["config"].replace("at_file=Si.np1.xyz", "at_file=train.xyz").replace("at_file=SiC.np1.xyz", "at_file=train.xyz")
    line = line.replace("sparse_method=uniform", "sparse_method=file").replace("gp_file=gp.xml", "gp_file=gp.h5")
    data = parse_gapfit_args(line.split())
    (gap,) = data["gap"]
    species = [14, 6] if len(ref["coords"]) == 3 else [14]
    pairs = [(species[i], species[j]) for i in range(len(species)) for j in range(i, len(species))]
    # one sparse file per species pair: write the expansion out (add_species=F), as gap_fit users must
    data["gap"] = [gap | {"Z1": a, "Z2": b, "add_species": False, "sparse_file": f"sparse{k}.txt"}
                   for k, (a, b) in enumerate(pairs)]
    quiet = Log(SerialComm(), quiet=True)
    return ref, fit(settings_from_dict(data), SerialComm(), quiet)


def run_mixed_line(name, tmp_path, monkeypatch):
    """Single-species fits with SOAP: SOAP sparse points by gap_fit's own indices (index_file; pargap
    numbers SOAP descriptors as gap_fit does, one per atom in file order), distance_2b ones by value."""
    ref = json.loads(gzip.decompress((DATA / f"{name}.json.gz").read_bytes()))
    monkeypatch.chdir(tmp_path)
    os.symlink(DATA / "Si.np1.xyz", tmp_path / "train.xyz")
    line = ref["config"].replace("at_file=Si.np1.xyz", "at_file=train.xyz").replace("gp_file=gp.xml", "gp_file=gp.h5")
    data = parse_gapfit_args(line.split())
    indices = ref["index"] if isinstance(ref["index"][0], list) else [ref["index"]]
    for k, (gap, coord, index) in enumerate(zip(data["gap"], ref["coords"], indices)):
        gap.pop("print_sparse_index", None)
        if gap["descriptor"] == "soap":
            (tmp_path / f"index{k}.txt").write_text("".join(f"{i}\n" for i in index))
            gap.update(sparse_method="index_file", sparse_file=f"index{k}.txt")
        else:
            sx = np.array(coord["sparsex"]).reshape(len(coord["alpha"]), -1)
            np.savetxt(tmp_path / f"sparse{k}.txt", np.column_stack([coord["cutoff"], sx]).ravel(), fmt="%.17g")
            gap.update(sparse_method="file", sparse_file=f"sparse{k}.txt")
    return ref, fit(settings_from_dict(data), SerialComm(), Log(SerialComm(), quiet=True))


@pytest.mark.parametrize("name", ["Si.soap.cur_points", "Si.two_descriptors"])
def test_soap_fits_match_gap_fit(name, tmp_path, monkeypatch):
    ref, pot = run_mixed_line(name, tmp_path, monkeypatch)
    assert len(pot.models) == len(ref["coords"])
    for model, coord in zip(pot.models, ref["coords"]):
        np.testing.assert_allclose(model.sparse_x.ravel(), coord["sparsex"], atol=1e-8)
        np.testing.assert_allclose(model.alpha, coord["alpha"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["Si.distance_2b.uniform", "SiC.distance_2b.uniform"])
def test_distance_2b_alpha_matches_gap_fit(name, tmp_path, monkeypatch):
    ref, pot = run_gapfit_line(name, tmp_path, monkeypatch)
    assert len(pot.models) == len(ref["coords"])
    for model, coord in zip(pot.models, ref["coords"]):
        np.testing.assert_allclose(model.sparse_x.ravel(), coord["sparsex"], atol=1e-8)
        np.testing.assert_allclose(model.alpha, coord["alpha"], atol=1e-5, rtol=0)


def test_print_sparse_index_reproduces_the_fit_through_index_file(tmp_path, monkeypatch):
    """Our own indices, written by print_sparse_index, select the same points through index_file."""
    monkeypatch.chdir(tmp_path)
    os.symlink(DATA / "Si.np1.xyz", tmp_path / "train.xyz")
    common = ("at_file=train.xyz default_sigma={0.01 1.0 0.5 0.0} e0_offset=2.0 energy_parameter_name=dft_energy "
              "force_parameter_name=dft_force virial_parameter_name=dft_virial sparse_jitter=1.0e-3 rnd_seed=1 ")
    gap = "distance_2b covariance_type=ard_se cutoff=6.0 delta=1.0 theta_uniform=0.1 n_sparse=20"
    quiet = Log(SerialComm(), quiet=True)
    first = fit(settings_from_dict(parse_gapfit_args(
        (common + f"gap={{{gap} sparse_method=random print_sparse_index=idx.out}}").split())), SerialComm(), quiet)
    again = fit(settings_from_dict(parse_gapfit_args(
        (common + f"gap={{{gap} sparse_method=index_file sparse_file=idx.out}}").split())), SerialComm(), quiet)
    np.testing.assert_array_equal(first.models[0].sparse_x, again.models[0].sparse_x)
    np.testing.assert_allclose(first.alpha, again.alpha, rtol=1e-12)


REFERENCES = Path(__file__).resolve().parent / "data"


def test_angle_3b_alpha_matches_gap_fit(tmp_path, monkeypatch):
    """angle_3b on SiC (all six species triplets), against a fit by QUIP's gap_fit itself
    (tests/data/make_gapfit_references.py made the reference); sparse points given by value."""
    ref = json.loads((REFERENCES / "angle_3b_SiC.json").read_text())
    monkeypatch.chdir(tmp_path)
    os.symlink(DATA / "SiC.np1.xyz", tmp_path / "train.xyz")
    data = parse_gapfit_args(ref["config"].replace("gp_file=gp.xml", "gp_file=gp.h5").split())
    (gap,) = data["gap"]
    data["gap"] = []
    for k, coord in enumerate(ref["coords"]):
        species = dict(item.split("=") for item in coord["descriptor"].split() if item.split("=")[0] in ("Z", "Z1", "Z2"))
        np.savetxt(tmp_path / f"sparse{k}.txt", np.column_stack([coord["cutoff"], coord["sparsex"]]).ravel(), fmt="%.17g")
        data["gap"].append(gap | {k2: int(v) for k2, v in species.items()}
                           | {"add_species": False, "sparse_method": "file", "sparse_file": f"sparse{k}.txt"})
    pot = fit(settings_from_dict(data), SerialComm(), Log(SerialComm(), quiet=True))
    assert len(pot.models) == 6
    for model, coord in zip(pot.models, ref["coords"]):
        np.testing.assert_allclose(model.alpha, coord["alpha"], atol=1e-5, rtol=0)
