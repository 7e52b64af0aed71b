"""Benchmark: the peak memory of a fit on one rank, its training file once and four times over.

    .venv/bin/python bench/four_times.py [--json out.json]

Fit: the Zuo Si example's settings of this measurement (2b with 20 uniform points + SOAP
n_max = l_max = 8 with 2,000 CUR points) on the whole Zuo et al. 2020 Si training file (214 structures, 13,233 atoms, 39,913
rows; examples/fetch.py), then on that file concatenated four times (159,652 rows). Each fit runs
in its own process (pargap-fit, one rank, the default row block); printed are the rows, the wall
time and the peak resident memory (ru_maxrss of the fit's process) of each, the ratio of the
four-times peak to the once peak (the baseline measured in the same run; done when at most 1.15)
and the --dry-run plan beside each measured peak. Held whole (before the rows were streamed) the
fits peaked at 599 MB and 1,636 MB.
"""

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))
from fetch import fetch  # noqa: E402  examples/fetch.py: the data in the repository, unpacked into a cache


SETTINGS = """
# the Zuo Si example's settings as measured in docs/scaling.md (examples/zuo2020-Si/fit.toml may move on)
at_file = "{data}"
gp_file = "{gp}"
default_sigma = [0.002, 0.1, 0.05, 0.0]
e0_method = "average"
force_parameter_name = "force"
sparse_jitter = 1e-8
rnd_seed = 1
[[gap]]
descriptor = "distance_2b"
cutoff = 5.0
cutoff_transition_width = 1.0
covariance_type = "ard_se"
delta = 1.0
theta_uniform = 1.0
n_sparse = 20
sparse_method = "uniform"
[[gap]]
descriptor = "soap"
cutoff = 5.0
cutoff_transition_width = 1.0
n_max = 8
l_max = 8
atom_sigma = 0.5
covariance_type = "dot_product"
zeta = 4
delta = 1.0
n_sparse = 2000
sparse_method = "cur_points"
"""


def settings(folder, name):
    return SETTINGS.format(data=folder / f"{name}.xyz", gp=folder / f"{name}.h5")


def run(config):
    """(rows, wall seconds, peak MB of the fit's process, planned peak MB)."""
    plan = subprocess.run([sys.executable, "-m", "pargap.cli.fit", str(config), "--dry-run"],
                          capture_output=True, text=True, check=True).stdout
    planned = float(re.search(r"largest estimated peak per rank: ([\d.]+) MB", plan).group(1))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    fit = subprocess.run([sys.executable, "-m", "pargap.cli.fit", str(config)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if fit.returncode != 0:
        sys.exit(f"pargap-fit {config} failed:\n{fit.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        sys.exit("the fits must run in increasing size: ru_maxrss of children is a maximum over all of them")
    rows = int(re.search(r"K_NM: (\d+) rows", fit.stdout).group(1))
    return rows, seconds, peak / 1024, planned


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()
    source = Path(fetch("zuo2020_mlip_benchmark/Si_train.xyz")).read_text()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, copies in (("once", 1), ("four", 4)):
            (folder / f"{name}.xyz").write_text(source * copies)
            (folder / f"{name}.toml").write_text(settings(folder, name))
            rows, seconds, peak, planned = run(folder / f"{name}.toml")
            results[name] = {"rows": rows, "seconds": seconds, "peak_mb": peak, "planned_mb": planned}
            print(f"{name}: {rows} rows, {seconds:.0f} s, peak {peak:.0f} MB (planned {planned:.0f} MB, "
                  f"measured/planned {peak / planned:.2f})", flush=True)
    ratio = results["four"]["peak_mb"] / results["once"]["peak_mb"]
    print(f"four times over / once: peak ratio {ratio:.3f} (done when <= 1.15), rows ratio "
          f"{results['four']['rows'] / results['once']['rows']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results | {"peak_ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
