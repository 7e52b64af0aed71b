"""pargap-fit: fit a GAP from a TOML settings file or a gap_fit command line.

    pargap-fit settings.toml [--set key=value ...]
    pargap-fit settings.toml --cv 5 --search search.toml      (pargap-tune: K-fold cross-validation)
    pargap-fit at_file=train.xyz gap={distance_2b cutoff=5.0 ...} default_sigma={...} gp_file=gap.h5
    mpirun -n 64 pargap-fit settings.toml
"""

import argparse
import sys

from pargap.cli.common import EXIT_ERROR, run, start_mpi
from pargap.errors import ConfigError
from pargap.settings.config import load_toml, parse_gapfit_args, settings_from_dict, apply_overrides
from pargap.version import __version__


def parser():
    p = argparse.ArgumentParser(
        prog="pargap-fit",
        description="Fit a Gaussian Approximation Potential (sparse GP) with MPI. Settings come from a "
        "TOML file or, for QUIP users, from gap_fit's key=value command line (same names and meanings).",
        epilog="Run under MPI with: mpirun -n P pargap-fit ... . Exit codes: 0 ok, 1 error, 2 usage, 3 internal, "
        "75 stopped by SIGTERM after writing a checkpoint (resume with --restart DIR).",
    )
    p.add_argument("config", nargs="*", metavar="SETTINGS.toml | key=value",
                   help="a TOML settings file, or gap_fit options such as at_file=... gap={...}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (TOML value syntax; e.g. --set sparse_jitter=1e-8 "
                   "--set gap.0.n_sparse=50); repeatable")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="save the models and the factor of the covariance rows to DIR (parallel HDF5) before the "
                   "solve; on SIGTERM, save what is done there (default GP_FILE.checkpoint) and exit 75")
    p.add_argument("--restart", metavar="DIR",
                   help="go on from the checkpoint in DIR (same settings; any number of ranks): fold in the "
                   "rows it lacks, then solve")
    p.add_argument("--stop-after", type=float, metavar="SECONDS",
                   help="after this many seconds, stop as on SIGTERM: save a checkpoint at the next safe "
                   "point and exit 75 (for a batch job's wall time when SIGTERM does not reach the ranks)")
    p.add_argument("--dry-run", action="store_true",
                   help="no fit: print the estimated peak memory of each phase on every rank, from the "
                   "data's sizes and the same partition as the fit (on --ranks P, or the launcher's ranks)")
    p.add_argument("--ranks", type=int, metavar="P",
                   help="with --dry-run on one process: the number of ranks to plan for")
    p.add_argument("--optimise", action="store_true",
                   help="first choose the hyperparameters that maximise the sparse GP's log marginal "
                   "likelihood, print the settings with them as TOML, then fit with them")
    p.add_argument("--optimise-what", default="sigma,delta,theta", metavar="LIST",
                   help="what --optimise varies, a comma list of sigma (noise: factors on default_sigma and "
                   "config_type_sigma), delta, theta (ard_se theta_uniform) (default: all)")
    p.add_argument("--print-config", action="store_true",
                   help="print the settings as TOML and exit without fitting")
    p.add_argument("--learning-curve", nargs="?", const="", metavar="FRACTIONS|N",
                   help="fit on nested subsets (default 0.1,0.2,0.4,0.8,1; N: N sizes doubling up to all) and "
                   "write errors on --validation against training-set size to <gp_file>_learning_curve/")
    p.add_argument("--validation", metavar="FILE|FRACTION",
                   help="for --learning-curve: labelled structures, or a fraction of at_file to hold out")
    p.add_argument("--cv", type=int, metavar="K",
                   help="no fit: K-fold cross-validation of the settings (and of --search's candidates) on the "
                   "training file, as pargap-tune does; writes the CV table and best.toml")
    p.add_argument("--search", metavar="SEARCH.toml", help="with --cv: the candidates to cross-validate")
    p.add_argument("--seed", type=int, metavar="N", help="with --cv: the folds' and draws' seed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--version", action="version", version=f"pargap {__version__}")
    return p


def cross_validation_argv(p, args):
    """pargap-tune's command line for ``pargap-fit SETTINGS.toml --cv K [--search S] [--seed N]``."""
    others = [flag for flag, on in (("--checkpoint", args.checkpoint), ("--restart", args.restart),
                                    ("--stop-after", args.stop_after is not None), ("--dry-run", args.dry_run),
                                    ("--optimise", args.optimise), ("--print-config", args.print_config),
                                    ("--learning-curve", args.learning_curve is not None)) if on]
    if others:
        p.error(f"--cv runs its own fits: no {', '.join(others)}")
    if len(args.config) != 1 or not args.config[0].endswith(".toml"):
        p.error("--cv needs one TOML settings file (pargap-fit --print-config translates gap_fit options)")
    argv = [args.config[0], "--cv", str(args.cv)]
    argv += ["--search", args.search] if args.search else []
    argv += ["--seed", str(args.seed)] if args.seed is not None else []
    argv += [f"--set={s}" for s in args.set] + (["-q"] if args.quiet else [])
    return argv


def settings_from_args(args, notes=None):
    """The settings of the command line; ``notes`` (a list) receives the lines to log about
    gap_fit options accepted and ignored."""
    tokens = args.config
    if not tokens:
        raise ConfigError("no settings given: pass a TOML file or gap_fit options (see --help)")
    if len(tokens) == 1 and tokens[0].endswith(".toml") and "=" not in tokens[0]:
        return load_toml(tokens[0], args.set)
    if any(t.endswith(".toml") and "=" not in t for t in tokens):
        raise ConfigError("give either one TOML file or gap_fit options, not both (use --set to override TOML)")
    data = parse_gapfit_args(tokens, notes)
    apply_overrides(data, args.set)
    return settings_from_dict(data)


def check_charge_only(settings, args):
    """A fit with charge models only (no gap) has no energy rows to checkpoint, stop or optimise."""
    if settings.gap:
        return
    flags = [flag for flag, on in (("--checkpoint", args.checkpoint), ("--restart", args.restart),
                                   ("--stop-after", args.stop_after is not None), ("--optimise", args.optimise),
                                   ("--learning-curve", args.learning_curve is not None)) if on]
    if flags:
        raise ConfigError(f"{', '.join(flags)}: not available for a fit with charge models only (no gap entry)")


def optimise_settings(comm, settings, args, log):
    """--optimise: the settings with the hyperparameters of maximum likelihood, printed as TOML."""
    from pargap.fitting.likelihood import optimise
    from pargap.parallel import collective

    def check():
        if args.restart:
            raise ConfigError("--optimise rebuilds the rows: it cannot be combined with --restart")

    collective(comm, check)
    what = [w.strip() for w in args.optimise_what.split(",") if w.strip()]
    optimum = optimise(settings, comm, log, what=what)
    if comm.Get_rank() == 0:
        print(f"# pargap-fit --optimise: log marginal likelihood {optimum.initial_log_likelihood:.6f} -> "
              f"{optimum.log_likelihood:.6f}\n" + optimum.settings.to_toml(), end="", flush=True)
    return optimum.settings


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.cv is not None:
        from pargap.cli.tune import main as tune_main

        return tune_main(cross_validation_argv(p, args))
    if args.search is not None or args.seed is not None:
        p.error("--search and --seed go with --cv")
    if args.ranks is not None and (args.ranks < 1 or not (args.dry_run or any(
            t.lower().replace(" ", "") in ("dryrun=t", "dryrun=true") for t in args.config))):
        p.error("--ranks P (P >= 1) goes with --dry-run (or dryrun=T)")
    if args.validation is not None and args.learning_curve is None:
        p.error("--validation is an option of --learning-curve")
    if args.learning_curve is not None and (args.checkpoint or args.restart or args.optimise
                                            or args.stop_after is not None):
        p.error("--learning-curve runs its own fits: no --checkpoint, --restart, --optimise or --stop-after")
    if args.dry_run and (args.optimise or args.learning_curve is not None):
        p.error("--dry-run plans the memory of one fit: no --optimise or --learning-curve")
    if args.print_config:
        # no MPI needed to translate settings
        from pargap.errors import PargapError

        try:
            print(settings_from_args(args).to_toml(), end="")
        except PargapError as exc:
            print(f"pargap: error: {exc}", file=sys.stderr)
            return 1
        return 0

    comm = start_mpi()
    if comm is None:
        return EXIT_ERROR
    if args.dry_run:
        return run(lambda: dry_run(comm, args), comm)

    def body():
        from pargap.fitting.checkpoint import EXIT_STOPPED, StopSignal, Stopped
        from pargap.fitting.fit import fit
        from pargap.fitting.output import write_potential
        from pargap.parallel import collective
        from pargap.progress import Log, PhaseTimer

        notes = []
        settings = collective(comm, settings_from_args, args, notes)
        if settings.dryrun:
            return dry_run(comm, args, settings)
        collective(comm, check_charge_only, settings, args)
        log = Log(comm, quiet=args.quiet, verbosity=settings.verbosity)
        timer = PhaseTimer(comm, log)
        for note in notes:
            log(note)
        if settings.template_file:
            from pargap.data.frames import read_template
            from pargap.parallel import on_root

            template = on_root(comm, read_template, settings.template_file)
            log(f"template_file {settings.template_file} ({len(template)} atoms) read; no effect: gap_fit gives it to "
                "descriptors that need a template molecule, and pargap's (distance_2b, angle_3b, soap) take none")
        if settings.sparsify_only_no_fit:
            from pargap.fitting.sparsify_only import sparsify_only

            sparsify_only(settings, comm, log, timer)
            return 0
        if args.learning_curve is not None:
            from pargap.fitting.learning_curve import run as learning_curve

            return learning_curve(settings, comm, log, args.learning_curve, args.validation)
        log(f"pargap-fit on {comm.Get_size()} rank(s): {settings.at_file} -> {settings.gp_file}")
        stop = StopSignal(comm, after_seconds=args.stop_after)  # SIGTERM: save what is done, exit EXIT_STOPPED
        try:
            try:
                if args.optimise:
                    settings = optimise_settings(comm, settings, args, log)
                    if stop.agreed():
                        raise Stopped("stopped (SIGTERM or --stop-after) during --optimise, before any rows: "
                                      "nothing to checkpoint; the settings found so far are printed above")
                potential = fit(settings, comm, log, timer, checkpoint=args.checkpoint, restart=args.restart,
                                stop=stop)
            except Stopped as exc:
                if comm.Get_rank() == 0:
                    hint = ("; --restart needs the settings printed by --optimise (save them to a file)"
                            if args.optimise and exc.args and "resume" in str(exc) else "")
                    print(f"pargap: {exc}{hint}", file=sys.stderr, flush=True)
                return EXIT_STOPPED
            with timer.phase("write"):
                stop.entering("write")
                write_potential(comm, potential, settings.gp_file)
            late = stop.agreed()  # a stop request during the write: the potential is complete, we are done
        finally:
            stop.restore()
        summary = timer.summary()
        log(f"wrote {settings.gp_file}; total {summary['total_seconds']:.2f} s")
        if settings.gp_file.lower().endswith(".xml") and potential.factor is not None:
            log("the GP factor for predictive variances has no place in GAP XML: fit with an .h5 gp_file "
                "(and pargap-convert it to XML) to keep it")
        if late:
            if comm.Get_rank() == 0:
                print(f"pargap: stop request (SIGTERM or --stop-after) during the write: {settings.gp_file} is "
                      "complete; no memory report", file=sys.stderr, flush=True)
            return 0
        report_memory(comm, settings, log, potential.provenance)
        return 0

    return run(body, comm)


def dry_run(comm, args, settings=None):
    """Rank 0 measures the data's sizes and prints the per-rank memory plan; no fit (--dry-run, or
    gap_fit's dryrun=T: ``settings`` already read). Under mpirun the plan is for the launcher's
    ranks and their memory limits; with --ranks P on one process, for P ranks sharing this node
    (or Slurm's tasks per node)."""
    from pargap.fitting import memory
    from pargap.linalg.solve import memory_per_rank
    from pargap.parallel import collective, on_root

    if settings is None:
        settings = collective(comm, settings_from_args, args)
    size = args.ranks or comm.Get_size()
    budget = memory_per_rank(comm) if args.ranks is None and comm.Get_size() > 1 else None
    on_root(comm, lambda: memory.report(memory.sample_sizes(settings), size, solver=settings.solver,
                                        row_block_mb=settings.row_block_mb, memory_per_rank=budget) and None)
    return 0


def report_memory(comm, settings, log, provenance):
    """The measured peak memory of every rank (max, min, mean) beside the --dry-run estimate for
    the solver and row block the fit used (from ``provenance``)."""
    import numpy as np

    from pargap.fitting import memory
    from pargap.parallel import on_root
    from pargap.progress import peak_memory_mb

    if log.quiet:
        return
    peaks = np.array(comm.allgather(peak_memory_mb()))  # before the estimate's own work
    solver = provenance.get("solver", settings.solver)
    row_block_mb = provenance.get("row_block_mb", settings.row_block_mb)

    def estimate():
        try:
            sizes = memory.sample_sizes(settings)
            return [e["peak"] for e in memory.plan(sizes, comm.Get_size(), solver, row_block_mb)[1]]
        except Exception as exc:  # noqa: BLE001 - the fit is written; the report must not fail it
            return f"{type(exc).__name__}: {exc}"

    planned = on_root(comm, estimate)
    if isinstance(planned, str):
        log(f"peak memory per rank: measured max {peaks.max():.1f} MB, min {peaks.min():.1f}; no estimate ({planned})")
        return
    log(f"peak memory per rank: measured max {peaks.max():.1f} MB (rank {peaks.argmax()}), min {peaks.min():.1f}, "
        f"mean {peaks.mean():.1f}; estimated (--dry-run model) max {max(planned):.1f} MB, "
        f"measured/estimated {peaks.max() / max(planned):.2f}")
    if len(peaks) <= 16:
        log("peak memory per rank, measured/estimated MB: "
            + ", ".join(f"{r}: {m:.0f}/{e:.0f}" for r, (m, e) in enumerate(zip(peaks, planned))))


if __name__ == "__main__":
    sys.exit(main())
