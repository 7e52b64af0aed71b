"""pargap-tune: choose hyperparameters by K-fold cross-validation on the training file.

    pargap-tune settings.toml --cv 5 --search search.toml [--groups G] [--out DIR]
    mpirun -n 4 pargap-tune settings.toml --cv 5 --search search.toml
"""

import argparse
import dataclasses
import sys

from pargap.cli.common import EXIT_ERROR, run, start_mpi


def parser():
    p = argparse.ArgumentParser(
        prog="pargap-tune",
        description="Choose hyperparameters by K-fold cross-validation on the training file alone: fit every "
        "candidate of a search file on K-1 folds, measure it on the held-out fold, print the table of CV "
        "errors, plot the best and write the best candidate's settings (best.toml) for pargap-fit.",
        epilog="The (candidate, fold) fits are spread over groups of MPI ranks (--groups; default one per rank). "
        "The search file's format: docs/hyperparameters.md. Exit codes: 0 ok, 1 error, 2 usage, 3 internal.",
    )
    p.add_argument("config", metavar="SETTINGS.toml", help="the fit's settings (the training file is its at_file)")
    p.add_argument("--search", metavar="SEARCH.toml",
                   help="the search space and method (without it: the CV errors of the settings as given)")
    p.add_argument("--cv", type=int, default=5, metavar="K", help="number of folds (default 5)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the folds, draws and subsamples (default: the "
                   "search file's seed, or 0)")
    p.add_argument("--groups", type=int, metavar="G",
                   help="groups of ranks fitting different folds at once (default: one per rank; fewer "
                   "groups spread each fit's rows over more ranks, for fits too large for one rank)")
    p.add_argument("--out", metavar="DIR", help="output folder (default <gp_file stem>_tune)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of SETTINGS.toml, as in pargap-fit; repeatable")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output (the table is printed)")
    p.add_argument("--version", action="version", version=f"pargap {__import__('pargap').__version__}")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.cv < 2:
        p.error("--cv K needs K >= 2")
    if args.groups is not None and args.groups < 1:
        p.error("--groups G needs G >= 1")
    comm = start_mpi()
    if comm is None:
        return EXIT_ERROR

    def body():
        from pargap.fitting.tune import Search, format_table, load_search, tune, write_report
        from pargap.parallel import collective, on_root
        from pargap.progress import Log
        from pargap.settings.config import load_toml

        settings, search = collective(comm, lambda: (load_toml(args.config, args.set),
                                                     load_search(args.search) if args.search else Search(())))
        if args.seed is not None:
            search = dataclasses.replace(search, seed=args.seed)
        log = Log(comm, quiet=args.quiet)
        log(f"pargap-tune on {comm.Get_size()} rank(s): {settings.at_file}, {args.cv}-fold CV, "
            + (f"search {args.search} ({search.method}, seed {search.seed})" if args.search else "the settings as given"))
        result = tune(settings, search, comm, log, k=args.cv, folder=args.out, n_groups=args.groups)
        on_root(comm, write_report, result, settings, search, args.cv)
        if comm.Get_rank() == 0:
            print(format_table(result["rows"]), flush=True)
        log(f"best: candidate {result['best_candidate']}; wrote {result['folder']}/best.toml, cv_table.csv, "
            "cv.json and cv_best.png")
        return 0

    return run(body, comm)


if __name__ == "__main__":
    sys.exit(main())
