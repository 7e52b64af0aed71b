"""pargap-eval --plot: parity plots and error histograms as PNG files with real content."""

import ase.io
import matplotlib.image
import numpy as np

from conftest import small_lj_frames
from pargap.cli.eval import main as eval_main
from pargap.settings.config import settings_from_dict
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.progress import Log


def test_plots_are_written_and_not_blank(tmp_path, capsys):
    frames = small_lj_frames()
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "cluster" if not atoms.pbc.any() else "bulk"
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    settings = settings_from_dict({
        "at_file": str(tmp_path / "train.xyz"), "e0": 0.0, "default_sigma": [0.01, 0.1, 0.1, 0.0],
        "gap": [{"descriptor": "distance_2b", "cutoff": 5.0, "cutoff_transition_width": 1.0, "delta": 1.0,
                 "theta_uniform": 0.5, "n_sparse": 10, "sparse_method": "uniform"}],
    })
    fit(settings, log=Log(SerialComm(), quiet=True)).save(tmp_path / "pot.h5")
    assert eval_main([str(tmp_path / "pot.h5"), str(tmp_path / "train.xyz"), "--plot", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "forces" in out
    for name in ("energy.png", "forces.png", "errors.png"):
        path = tmp_path / "plots" / name
        assert path.stat().st_size > 10_000, name
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 300
        assert np.std(image[..., :3]) > 0.02, f"{name} looks blank"
