"""QUIP GAP XML files without QUIP: pargap's writer and reader round-trip exactly, and bad files
(missing or truncated sparseX, wrong md5, descriptors or options pargap lacks) are clear errors
naming the file; what QUIP cannot express is refused before anything is written."""

import json
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk

from pargap.baselines.core_potential import CorePotential
from pargap.descriptors import make_descriptor
from pargap.errors import PargapError
from pargap.gp.kernels import DotProduct, SquaredExponential
from pargap.gp.model import Model
from pargap.potential.potential import Potential
from pargap.potential.quip_xml import descriptor_string, parse_descriptor_string


@pytest.fixture
def potential():
    rng = np.random.default_rng(2)
    two = make_descriptor("distance_2b", cutoff=4.0, cutoff_transition_width=0.8, Z1=14, Z2=14)
    three = make_descriptor("angle_3b", cutoff=3.0, Z=14, Z1=14, Z2=14)
    soap = make_descriptor("soap", cutoff=3.5, l_max=2, n_max=2, atom_sigma=0.5, Z=14, species_Z=[14])
    models = [
        Model(two, SquaredExponential(delta=0.5, theta=[0.9], f0=0.1), rng.uniform(2, 4, (5, 1)),
              rng.uniform(0.3, 1, 5), rng.normal(size=5)),
        Model(three, SquaredExponential(delta=0.3, theta=[1.0, 2.0, 1.5]), rng.uniform(1, 5, (4, 3)),
              rng.uniform(0.3, 1, 4), rng.normal(size=4)),
        Model(soap, DotProduct(delta=0.2, zeta=4), rng.uniform(0, 1, (3, soap.dimension)), np.ones(3),
              rng.normal(size=3)),
    ]
    return Potential(models, {14: -158.25}, settings='e0 = -158.25\n')


def si():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=0)
    return atoms


def test_round_trip_is_exact(potential, tmp_path):
    potential.save(tmp_path / "gp.xml")
    again = Potential.load(tmp_path / "gp.xml")
    for a, b in zip(potential.models, again.models):
        assert (a.descriptor.name, a.descriptor.params()) == (b.descriptor.name, b.descriptor.params())
        assert (a.kernel.name, str(a.kernel.params())) == (b.kernel.name, str(b.kernel.params()))
        for key in ("sparse_x", "sparse_weight", "alpha"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert again.e0 == potential.e0 and again.settings == potential.settings
    p, q = potential.predict(si()), again.predict(si())
    assert p["energy"] == q["energy"]
    np.testing.assert_array_equal(p["forces"], q["forces"])


def test_descriptor_strings_parse_back():
    soap = make_descriptor("soap", cutoff=5.0, l_max=4, n_max=6, atom_sigma=0.4, n_species=2, Z=6, species_Z=[14, 6])
    name, options = parse_descriptor_string(descriptor_string(soap))
    assert name == "soap" and options["species_z"] == "14 6" and options["z"] == "6"
    assert options["central_reference_all_species"] == "F"



def test_a_descriptor_setting_the_xml_cannot_carry_is_refused(monkeypatch):
    """Every setting of a descriptor reaches the XML string, or the writer refuses."""
    two = make_descriptor("distance_2b", cutoff=4.0, Z1=14, Z2=14)
    monkeypatch.setattr(two, "params", lambda: {"cutoff": 4.0, "cutoff_transition_width": 0.5, "Z1": 14,
                                                "Z2": 14, "exponent": 2})
    with pytest.raises(PargapError, match="exponent"):
        descriptor_string(two)

def test_convert_both_ways(potential, tmp_path):
    potential.save(tmp_path / "gp.h5")
    for src, dst in (("gp.h5", "out/gp.xml"), ("out/gp.xml", "back.h5")):
        proc = subprocess.run([sys.executable, "-m", "pargap.cli.convert", str(tmp_path / src), str(tmp_path / dst)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert Potential.load(tmp_path / "back.h5").predict(si())["energy"] == potential.predict(si())["energy"]



def test_convert_to_xml_notes_the_factor_without_reading_it(potential, tmp_path, monkeypatch, capsys):
    """HDF5 with /gp -> XML: a note that variances stay in the HDF5 file; the (M, M) factor, which
    the XML drops, is never read from disk."""
    from pargap.cli.convert import main

    M = sum(m.n_sparse for m in potential.models)
    potential.factor, potential.sparse_jitter = np.eye(M), 1e-8
    potential.save(tmp_path / "gp.h5")
    monkeypatch.setattr(Potential, "factor", property(lambda self: pytest.fail("the GP factor was read")))
    assert main([str(tmp_path / "gp.h5"), str(tmp_path / "gp.xml")]) == 0
    assert "no place in GAP XML" in capsys.readouterr().out

def test_xml_potential_predicts_without_any_m_by_m_matrix(potential, tmp_path, monkeypatch):
    """Loading GAP XML and predicting energies and forces (GAPCalculator) need only alpha and the
    sparse points: no K_MM, no Cholesky or QR factor; asking it for a variance is a clear error."""
    import scipy.linalg

    from pargap.errors import InputError
    from pargap.potential.calculator import GAPCalculator

    potential.save(tmp_path / "gp.xml")

    sizes = {m.n_sparse for m in potential.models}

    def guarded(function):  # small factorisations of other shapes (SOAP's radial basis) are fine
        def call(*args, **kwargs):
            if any(np.ndim(a) == 2 and np.shape(a)[0] in sizes for a in args):
                pytest.fail(f"{function.__name__} of an (M, M) matrix for prediction")
            return function(*args, **kwargs)
        return call

    def forbidden(*args, **kwargs):
        pytest.fail("a kernel matrix was built for prediction (it needs only the contraction)")

    for owner, name in [(scipy.linalg, "cholesky"), (scipy.linalg, "qr"), (np.linalg, "cholesky"),
                        (np.linalg, "qr")]:
        monkeypatch.setattr(owner, name, guarded(getattr(owner, name)))
    for owner, name in [(Model, "covariance_sparse"), (SquaredExponential, "__call__"), (DotProduct, "__call__")]:
        monkeypatch.setattr(owner, name, forbidden)
    atoms = si()
    atoms.calc = GAPCalculator(str(tmp_path / "gp.xml"))
    assert atoms.get_potential_energy() == pytest.approx(potential.predict(atoms)["energy"], rel=1e-12)
    assert atoms.get_forces().shape == (len(atoms), 3)
    with pytest.raises(InputError, match="no GP factor"):
        atoms.calc.get_energy_variance(atoms)


def test_saving_over_a_potential_leaves_only_its_own_sparse_files(potential, tmp_path):
    """A save over gp.xml with other models (and a new label) removes the old gp.xml.sparseX.* files,
    which nothing refers to any more, and nothing else: the folder holds one consistent potential."""
    others = ["other.xml.sparseX.GAP_1", "gp.xml.bak", "gp.xml.sparseX", "notes.txt"]
    for name in others:
        (tmp_path / name).write_text("keep\n")
    potential.save(tmp_path / "gp.xml")
    first = sparse_files(tmp_path)
    assert len(first) == 3
    fewer = Potential(potential.models[:2], potential.e0)
    label = fewer.save(tmp_path / "gp.xml")
    kept = sparse_files(tmp_path)
    assert [p.name for p in kept] == [f"gp.xml.sparseX.{label}{k}" for k in (1, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["gp.xml", *others] + [p.name for p in kept])
    assert all((tmp_path / name).read_text() == "keep\n" for name in others)
    again = Potential.load(tmp_path / "gp.xml")
    assert again.predict(si())["energy"] == fewer.predict(si())["energy"]


def broken(potential, tmp_path, edit):
    potential.save(tmp_path / "gp.xml")
    edit(tmp_path)
    with pytest.raises(PargapError) as info:
        Potential.load(tmp_path / "gp.xml")
    return str(info.value)


def sparse_files(folder):
    return sorted(folder.glob("gp.xml.sparseX.*"))


def test_missing_sparse_file(potential, tmp_path):
    msg = broken(potential, tmp_path, lambda d: sparse_files(d)[0].unlink())
    assert "gp.xml" in msg and "missing" in msg and ".sparseX." in msg


def test_truncated_sparse_file(potential, tmp_path):
    def truncate(d):
        f = sparse_files(d)[-1]
        f.write_text("".join(f.read_text().splitlines(keepends=True)[:-2]))

    msg = broken(potential, tmp_path, truncate)
    assert "md5" in msg and "truncated" in msg and "gp.xml" in msg


def test_wrong_md5(potential, tmp_path):
    def edit(d):
        xml = (d / "gp.xml").read_text()
        (d / "gp.xml").write_text(xml.replace('sparseX_md5sum="', 'sparseX_md5sum="0', 1))

    assert "md5" in broken(potential, tmp_path, edit)


def test_truncated_without_md5(potential, tmp_path):
    def edit(d):
        xml = (d / "gp.xml").read_text()
        (d / "gp.xml").write_text(xml.replace("sparseX_md5sum=", "other="))
        f = sparse_files(d)[0]
        f.write_text("\n".join(f.read_text().split()[:-1]))

    assert "expected n_sparseX x dimensions" in broken(potential, tmp_path, edit)


@pytest.mark.parametrize("old, new, words", [
    ("<descriptor>distance_2b", "<descriptor>bispectrum_so4 j_max=4 z0=0.1 ", ["bispectrum_so4", "not implemented"]),
    ("<descriptor>distance_2b", "<descriptor>distance_2b exponents={2} ", ["exponents", "not implemented"]),
    ("<descriptor>soap", "<descriptor>soap radial_basis=GTO ", ["radial_basis", "not implemented"]),
    ("<descriptor>angle_3b", "<descriptor>angle_3b zzz=1 ", ["zzz", "not implemented"]),
    ('covariance_type="1"', 'covariance_type="3"', ["covariance_type=3"]),
])
def test_unsupported_descriptor_or_kernel(potential, tmp_path, old, new, words):
    def edit(d):
        xml = (d / "gp.xml").read_text()
        assert old in xml
        (d / "gp.xml").write_text(xml.replace(old, new, 1))

    msg = broken(potential, tmp_path, edit)
    assert "gp.xml" in msg and all(w in msg for w in words), msg


PAIR_TABLE = "pair Si Si\n1.5 1.0\n2.0 0.3\n2.5 0.1\n3.5 0.0\npair Si C\n1.2 2.0\n1.9 -0.2\n3.0 0.0\n"


def test_pair_table_core_becomes_a_pure_pair_glue(potential, tmp_path):
    table = CorePotential.from_text("pair_table", PAIR_TABLE)
    with_table = Potential(potential.models, {14: -158.25, 6: -140.5}, core=table)
    with_table.save(tmp_path / "gp.xml")
    again = Potential.load(tmp_path / "gp.xml")
    assert again.core.kind == "glue"
    atoms = si()
    atoms.numbers[:2] = 6
    p, q = with_table.predict(atoms), again.predict(atoms)
    assert q["energy"] == pytest.approx(p["energy"], rel=1e-13)
    np.testing.assert_allclose(q["forces"], p["forces"], rtol=1e-12, atol=1e-12)


def test_what_quip_cannot_hold_is_refused_before_writing(potential, tmp_path):
    charges = Potential(potential.models, potential.e0, charge_models=potential.models[:1])
    with pytest.raises(PargapError, match="charge"):
        charges.save(tmp_path / "gp.xml")
    assert list(tmp_path.iterdir()) == []


def test_not_xml(tmp_path):
    (tmp_path / "gp.xml").write_text("<GAP_params><unclosed>")
    with pytest.raises(PargapError, match="not valid XML"):
        Potential.load(tmp_path / "gp.xml")


def test_pargap_fit_writes_xml_when_gp_file_ends_in_xml(tmp_path, capsys):
    """gp_file=NAME.xml: the same fit as gp_file=NAME.h5, written as GAP XML; pargap-eval reads it."""
    import ase.io

    from conftest import small_lj_frames
    from pargap.cli.eval import main as eval_main
    from pargap.cli.fit import main as fit_main

    ase.io.write(tmp_path / "train.xyz", small_lj_frames(), format="extxyz")
    line = [f"at_file={tmp_path / 'train.xyz'}", "gap={distance_2b cutoff=5.0 cutoff_transition_width=1.0 "
            "covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=10 sparse_method=uniform}",
            "default_sigma={0.01 0.1 0.1 0.0}", "e0=0.0", "rnd_seed=1"]
    tables = []
    for name in ("gp.h5", "gp.xml"):
        assert fit_main(line + [f"gp_file={tmp_path / name}"]) == 0
        capsys.readouterr()
        assert eval_main([str(tmp_path / name), str(tmp_path / "train.xyz"), "--json"]) == 0
        tables.append(json.loads(capsys.readouterr().out))
    assert tables[0] == tables[1] and sparse_files(tmp_path)
    atoms = ase.io.read(tmp_path / "train.xyz", "3")
    p, q = (Potential.load(tmp_path / name).predict(atoms) for name in ("gp.h5", "gp.xml"))
    assert p["energy"] == q["energy"]
    np.testing.assert_array_equal(p["forces"], q["forces"])


def test_lammps_md_ase_example_runs(potential, tmp_path, monkeypatch):
    """docs/lammps.md's ASE MD block, on a small XML potential (3 steps instead of 1000)."""
    from pathlib import Path

    import ase.io

    from test_docs import code_blocks

    (block,) = [b for b in code_blocks(Path(__file__).parents[1] / "docs" / "lammps.md", "python")
                if "GAPCalculator" in b]
    monkeypatch.chdir(tmp_path)
    potential.save("gp.xml")
    ase.io.write("start.xyz", si())
    assert "dyn.run(1000)" in block
    exec(block.replace("dyn.run(1000)", "dyn.run(3)"), {})
    assert len(ase.io.read("md.traj", ":")) == 4


def test_compare_takes_soap_settings_from_a_potential(potential, tmp_path):
    """pargap-compare --soap-from gp.xml uses the potential's SOAP and zeta."""
    import ase.io
    import h5py

    from pargap.cli.compare import main as compare_main

    potential.save(tmp_path / "gp.xml")
    frames = [si() for _ in range(3)]
    for k, atoms in enumerate(frames):
        atoms.rattle(0.2, seed=k + 1)
    ase.io.write(tmp_path / "db.xyz", frames, format="extxyz")
    same = "cutoff=3.5 l_max=2 n_max=2 atom_sigma=0.5 zeta=4"
    for out, option in (("a.h5", ["--soap-from", str(tmp_path / "gp.xml")]), ("b.h5", ["--soap", same])):
        assert compare_main([str(tmp_path / "db.xyz"), "-o", str(tmp_path / out), "-q", *option]) == 0
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        np.testing.assert_array_equal(a["kernel"][()], b["kernel"][()])
        assert 0.5 < a["kernel"][()].min() < 1.0


def test_older_files_with_inline_sparse_points_and_one_e0(potential, tmp_path):
    """Before sparseX files, the points were the text of the <sparseX> elements; e0 one attribute."""
    import re

    potential.save(tmp_path / "gp.xml")
    xml = (tmp_path / "gp.xml").read_text()
    for k, model in enumerate(potential.models):
        name = re.findall(r'sparseX_filename="([^"]+)"', xml)[0]
        xml = re.sub(r' sparseX_filename="[^"]+" sparseX_md5sum="[^"]+"', "", xml, count=1)
        (tmp_path / name).unlink()
        for m, x in enumerate(model.sparse_x, start=1):
            tag = re.search(rf'<sparseX i="{m}" alpha="{re.escape(repr(float(model.alpha[m - 1])))}"[^/]*/>', xml)
            xml = xml.replace(tag.group(0), tag.group(0)[:-2] + ">" + " ".join(map(repr, x)) + "</sparseX>", 1)
    xml = re.sub(r'<GAP_data do_core="F">\s*<e0 Z="14" value="[^"]+"/>', '<GAP_data do_core="F" e0="-158.25">', xml)
    (tmp_path / "gp.xml").write_text(xml)
    old = Potential.load(tmp_path / "gp.xml")
    assert old.e0 == {14: -158.25}
    p, q = potential.predict(si()), old.predict(si())
    assert p["energy"] == q["energy"]
    np.testing.assert_array_equal(p["forces"], q["forces"])


@pytest.mark.parametrize("old, new", [('gap_version="1769700636"', 'gap_version="1400000000"'),
                                      (' gap_version="1769700636"', "")])
def test_soap_of_files_older_than_its_two_l_plus_one_factor_is_refused(potential, tmp_path, old, new):
    """QUIP evaluates SOAP without the (2l+1)^-1/2 factor in such files: pargap would differ silently."""
    def edit(folder):
        xml = (folder / "gp.xml").read_text()
        assert old in xml
        (folder / "gp.xml").write_text(xml.replace(old, new))

    msg = broken(potential, tmp_path, edit)
    assert "gp.xml" in msg and "gap_version" in msg and "1423143769" in msg


def test_an_xml_gp_file_keeps_no_variance_factor_unless_asked(tmp_path):
    """GAP XML has no place for the (M, M) factor: by default a fit to .xml does not keep it to the
    end; store_covariance = true still does (and the fit says it is dropped)."""
    import dataclasses

    from pargap.fitting.output import stores_variance
    from pargap.settings.config import load_toml

    (tmp_path / "fit.toml").write_text('at_file = "x.xyz"\ngp_file = "gp.h5"\ndefault_sigma = [0.01, 0.1, 0.1, 0.0]\n'
                                       '[[gap]]\ndescriptor = "distance_2b"\ncutoff = 4.0\nn_sparse = 5\n'
                                       'delta = 1.0\ntheta_uniform = 1.0\n')
    settings = load_toml(tmp_path / "fit.toml")
    assert stores_variance(settings, 100)
    assert not stores_variance(dataclasses.replace(settings, gp_file="gp.XML"), 100)
    assert stores_variance(dataclasses.replace(settings, gp_file="gp.xml", store_covariance=True), 100)
