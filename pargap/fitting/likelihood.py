"""The log marginal likelihood of the sparse GP, and the hyperparameters that maximise it.

The fit's model (subset of regressors / DTC): y ~ N(0, Q_NN + Lambda), Q_NN = K_NM K_MM^-1 K_MN,
K_MM with the sparse jitter on its diagonal. With A = [Lambda^-1/2 K_NM ; U] = Q R, K_MM = U^T U,
b = [Lambda^-1/2 y ; 0], and r the last diagonal entry of the R factor of [A | b]:

    log|Q_NN + Lambda|       = log|Lambda| + 2 log|det R| - 2 log|det U|   (determinant lemma)
    y^T (Q_NN + Lambda)^-1 y = |b|^2 - |Q^T b|^2 = r^2                     (Woodbury)
    log p(y) = -1/2 (r^2 + log|Lambda| + 2 log|det R| - 2 log|det U| + N log 2 pi)

Rescaling without new rows. Every row belongs to a *noise group*: energy, force, virial or
Hessian rows whose sigma comes from default_sigma / config_type_sigma (a factor c_g scales all of
them), or rows whose sigma the data fix (per-structure sigma keys). A model's delta_k multiplies
its columns of K_NM (and its block of K_MM) by d_k = (delta_k / delta_k0)^2. Since
[A_g D | b_g] / c_g = Q_g R_g diag(d, 1) / c_g, the (M+1)-column triangles R_g of the groups,
reduced over the ranks once (tall-skinny QR), serve every (delta, sigma): rank 0 stacks
R_g diag(d, 1) / c_g with [U(delta) | 0] and factorises ((G + 1)(M + 1) rows, O(G M^3), no
communication). Only theta (ard_se length scales) needs new rows: such evaluations rebuild them
with the fit pipeline on all ranks.

The optimiser maximises the profile likelihood: outside, Nelder-Mead over log theta (each step
rebuilds the rows, all ranks; rank 0 drives and broadcasts the step; a point seen before is not
rebuilt); inside, on rank 0 only, L-BFGS-B with the analytic gradient over log(delta_k / delta_k0)
and log c_g, each within a factor 1000 of its start. dot_product (SOAP) kernels keep zeta: it is a
discrete modelling choice, not a smooth length scale. The likelihood is only as accurate as the
fit is well conditioned: with condition warnings (tiny jitter against a large delta^2), raise
sparse_jitter.

Cost on rank 0 per (delta, sigma) evaluation: a QR of (G + 1)(M + 1) x (M + 1) rows plus about
half that for the gradient; measured ~0.02 s at M = 200, ~0.1 s at M = 500, ~0.9 s at M = 1000
(3 groups, 2 busy shared cores). Memory: G + 2 triangles of (M + 1)^2 doubles on rank 0; on every
rank, beside its rows, a triangle and a chunk of 4 (M + 1) rows while a group is reduced.
"""

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize

from pargap.errors import ConfigError, PargapError
from pargap.gp.model import cholesky_factor
from pargap.linalg import tsqr
from pargap.linalg.solve import r_factor, reduce_triangles
from pargap.parallel import SerialComm, collective, on_root
from pargap.progress import Log, PhaseTimer

GROUPS = ("energy", "force", "virial", "hessian", "fixed")
"""Noise groups: rows whose sigma follows default_sigma[g] / config_type_sigma (g = 0..3), and
rows whose sigma is given by the data (4). Masked rows (infinite sigma) are group -1."""
FIXED = 4
FAILED = 1e300
"""-log p reported to the optimiser for a step where K_MM + jitter is not positive definite."""
BOUND = math.log(1e3)
"""Each parameter stays within a factor 1000 of its starting value."""


# ---- noise groups of the rows ---------------------------------------------------------------------

def _sigmas(s):
    """Row sigmas of one structure, in covariance_rows' order (energy, forces, virial, Hessian)."""
    from pargap.gp.observations import VIRIAL_COMPONENTS

    out, kinds = [], []
    if s.energy is not None:
        out.append([s.sigma_energy])
        kinds.append([0])
    if s.forces is not None:
        out.append(np.asarray(s.sigma_forces, dtype=float).ravel())
        kinds.append([1] * (3 * s.n_atoms))
    if s.virial is not None:
        out.append([s.sigma_virial[k, l] for k, l in VIRIAL_COMPONENTS])
        kinds.append([2] * 6)
    if s.hessian:
        out.append([s.sigma_hessian] * len(s.hessian))
        kinds.append([3] * len(s.hessian))
    if not out:
        return np.zeros(0), np.zeros(0, dtype=int)
    return np.concatenate(out).astype(float), np.concatenate(kinds).astype(int)


def row_noise(structures, settings):
    """(group (n_p,) int, log sigma^2 (n_p,)) of this rank's rows, in covariance_rows' order.

    A row follows the settings' sigmas when doubling default_sigma and config_type_sigma doubles
    its sigma; otherwise the data fix it (group 4). Infinite sigma (force_mask) is group -1."""
    from pargap.data.frames import extract

    doubled = dataclasses.replace(
        settings, default_sigma=tuple(2.0 * v for v in settings.default_sigma),
        config_type_sigma={k: tuple(2.0 * v for v in sig) for k, sig in settings.config_type_sigma.items()})
    groups, logs = [], []
    for s in structures:
        sigma, kind = _sigmas(s)
        sigma2, _ = _sigmas(extract(s.atoms, s.index, doubled, settings.at_file, check_sigma=False))
        finite = np.isfinite(sigma)
        follows = finite & np.isclose(sigma2, 2.0 * sigma, rtol=1e-12, atol=0.0)
        group = np.where(follows, kind, FIXED)
        group[~finite] = -1
        groups.append(group)
        logs.append(np.where(finite, 2.0 * np.log(np.where(finite, sigma, 1.0)), 0.0))
    if not groups:
        return np.zeros(0, dtype=int), np.zeros(0)
    return np.concatenate(groups), np.concatenate(logs)


# ---- the likelihood from the group triangles -------------------------------------------------------

def group_triangle(block, rows, chunk=None):
    """R factor (M+1, M+1) of block[rows], folded in (:func:`pargap.linalg.tsqr.fold`) at most
    ``chunk`` rows at a time (default 4 (M+1)): beyond the block a rank holds one chunk and a
    triangle, not a copy of the group."""
    width = block.shape[1]
    chunk = chunk or 4 * width
    R = tsqr.empty_triangle(width)
    for start in range(0, len(rows), chunk):
        tsqr.fold(R, np.asfortranarray(block[rows[start:start + chunk]]))
    return R


@dataclass
class Terms:
    """What rank 0 needs to evaluate log p(y) for any delta and noise scaling (at fixed theta).

    factors: per group, the triangle (k_g, M+1) of its rows [A_g | b_g] (None: no rows), at the
    base sigmas and deltas; counts (5,) rows per group; log_sigma2 (5,) sum of log sigma^2 per
    group (base); column_gap (M,) gap entry of each column; blocks: K_MM block of each model without
    jitter (base delta); block_gap: gap entry of each model; jitter (eV^2)."""

    factors: list
    counts: np.ndarray
    log_sigma2: np.ndarray
    column_gap: np.ndarray
    blocks: list
    block_gap: list
    jitter: float

    @property
    def n_rows(self):
        return int(self.counts.sum())


def gather_terms(comm, block, groups, log_sigma2, models, jitter):
    """Reduce this rank's rows block [Lambda^-1/2 K_NM | Lambda^-1/2 y] (n_p, M+1) group by group
    to rank 0 (the block is left unchanged). Returns Terms on rank 0, None elsewhere. Collective."""
    def check():
        if block.shape[0] != len(groups):
            raise PargapError(f"internal: {block.shape[0]} rows but {len(groups)} noise entries")

    collective(comm, check)
    counts = comm.allreduce(np.array([np.sum(groups == g) for g in range(len(GROUPS))]))
    sums = comm.allreduce(np.array([log_sigma2[groups == g].sum() for g in range(len(GROUPS))]))
    factors = []
    for g in range(len(GROUPS)):
        if counts[g] == 0:
            factors.append(None)
            continue
        R = collective(comm, group_triangle, block, np.flatnonzero(groups == g))
        factors.append(reduce_triangles(comm, R))
    if comm.Get_rank() != 0:
        return None
    column_gap = np.concatenate([np.full(m.n_sparse, m.gap_index) for m in models])
    return Terms(factors, counts, sums, column_gap, [m.covariance_sparse(0.0) for m in models],
                 [m.gap_index for m in models], float(jitter))


def log_likelihood(terms, log_delta=None, log_scale=None, gradient=False):
    """log p(y) (natural log, y in eV units) at delta_k = delta_k0 exp(log_delta[gap entry]) and
    noise sigmas of group g times exp(log_scale[g]) (g = 0..3; the fixed group never moves).
    Rank 0 only; O(G M^3). With ``gradient``: (log p, d log p / d log_delta (n_gap,),
    d log p / d log_scale (4,)), analytic (see :func:`_gradient`), about half an evaluation more."""
    n_gap = int(terms.column_gap.max()) + 1 if len(terms.column_gap) else 0
    log_delta = np.zeros(n_gap) if log_delta is None else np.asarray(log_delta, dtype=float)
    log_scale = np.zeros(4) if log_scale is None else np.asarray(log_scale, dtype=float)
    scale = np.exp(np.append(log_scale, 0.0))  # the fixed group: c = 1
    M = len(terms.column_gap)
    columns = np.append(np.exp(2.0 * log_delta[terms.column_gap]), 1.0)
    K_blocks = [math.exp(2.0 * log_delta[g]) * K + terms.jitter * np.eye(len(K))
                for K, g in zip(terms.blocks, terms.block_gap)]
    U_blocks = [cholesky_factor(K) for K in K_blocks]
    U = scipy.linalg.block_diag(*U_blocks)
    scaled = [None if F is None else F * (columns / c) for F, c in zip(terms.factors, scale)]
    stack = [B for B in scaled if B is not None]
    stack.append(np.column_stack([U, np.zeros(M)]))
    R = np.zeros((M + 1, M + 1))
    reduced = r_factor(np.vstack(stack))
    R[:len(reduced)] = reduced[:M + 1]
    diagonal = np.abs(np.diag(R))
    if np.any(diagonal[:M] == 0.0) or not np.all(np.isfinite(R)):
        raise PargapError("the likelihood's least-squares matrix is singular: raise sparse_jitter")
    r = diagonal[M]
    log_det_R = np.log(diagonal[:M]).sum()
    log_det_U = np.log(np.abs(np.diag(U))).sum()
    log_lambda = float(np.sum(terms.log_sigma2 + 2.0 * terms.counts * np.log(scale)))
    N = terms.n_rows
    value = float(-0.5 * (r * r + log_lambda + 2.0 * log_det_R - 2.0 * log_det_U + N * math.log(2.0 * math.pi)))
    if not gradient:
        return value
    return (value, *_gradient(terms, R, scaled, K_blocks, U_blocks, n_gap))


def _gradient(terms, R, scaled, K_blocks, U_blocks, n_gap):
    """d log p / d log delta_k and d log p / d log c_g from the factors of one evaluation.

    With f = -2 log p - N log 2 pi = r^2 + log|H| + log|Lambda| - log|K_MM|, H = A^T A = R^T R,
    G = [A | b]^T [A | b] (the data part G_d = G - K_MM), alpha = H^-1 A^T b, a = (-alpha, 1):
    r^2 = min over alpha of a^T G a, so dr^2 = a^T dG a (envelope), and dlog|H| = tr(H^-1 dH).
    Noise group g (B_g its scaled triangle): dG / dlog c_g = -2 B_g^T B_g, so
        df/dlog c_g = -2 |B_g a|^2 - 2 |B_g R^-1|_F^2 + 2 n_g.
    Gap entry k (columns E_k, K_k its K_MM blocks with jitter j): dG_d = 2 (E_k G_d + G_d E_k),
    dK_MM = 2 (K_k - j I); with G a = (0, r^2) and tr(H^-1 E_k H_d) = M_k - tr(K_k H^-1_kk):
        df/dlog delta_k = 2 M_k - 2 alpha_k.K_k alpha_k - 2 j |alpha_k|^2 - 2 tr(K_k H^-1_kk)
                          - 2 j tr(H^-1_kk) + 2 j tr(K_k^-1)."""
    M = len(terms.column_gap)
    R_M = R[:M, :M]
    alpha = scipy.linalg.solve_triangular(R_M, R[:M, M], check_finite=False)
    a = np.append(-alpha, 1.0)
    R_inv = scipy.linalg.solve_triangular(R_M, np.eye(M), check_finite=False)
    d_scale = np.zeros(4)
    for g in range(4):
        B = scaled[g]
        if B is None:
            continue
        X = B[:, :M] @ R_inv
        d_scale[g] = -0.5 * (-2.0 * np.sum((B @ a) ** 2) - 2.0 * np.sum(X * X) + 2.0 * terms.counts[g])
    d_delta = np.zeros(n_gap)
    j = terms.jitter
    start = 0
    for K, U, g in zip(K_blocks, U_blocks, terms.block_gap):
        part = slice(start, start + len(K))
        start += len(K)
        alpha_k = alpha[part]
        H_inv_kk = R_inv[part] @ R_inv[part].T
        K_inv_trace = np.sum(scipy.linalg.solve_triangular(U, np.eye(len(K)), check_finite=False) ** 2)
        df = (2.0 * len(K) - 2.0 * alpha_k @ K @ alpha_k - 2.0 * j * alpha_k @ alpha_k
              - 2.0 * np.sum(K * H_inv_kk) - 2.0 * j * np.trace(H_inv_kk) + 2.0 * j * K_inv_trace)
        d_delta[g] += -0.5 * df
    return d_delta, d_scale


def delta_bounds(terms, n_gap):
    """Largest log(delta_k / delta_k0) for which delta^2 K_MM + jitter stays safely positive
    definite: a block whose smallest eigenvalue is below the rounding level (M eps lambda_max)
    may scale until d (|lambda_min| + M eps lambda_max) = jitter / 10; clearly positive blocks,
    and everything beyond a factor 1000, are bounded by BOUND."""
    upper = np.full(n_gap, BOUND)
    for K, g in zip(terms.blocks, terms.block_gap):
        eig = np.linalg.eigvalsh(K)
        noise = len(K) * np.finfo(float).eps * max(eig[-1], 0.0)
        if eig[0] > 10.0 * noise:
            continue
        d_max = 0.1 * terms.jitter / (max(-eig[0], 0.0) + noise) if noise > 0 else np.inf
        upper[g] = min(upper[g], 0.5 * math.log(d_max) if d_max > 0 else -BOUND)
    return upper


def dense_log_likelihood(K_nm, y, sigma, K_mm):
    """Reference log N(y | 0, K_NM K_MM^-1 K_MN + diag(sigma^2)) by dense numpy (small problems)."""
    C = K_nm @ np.linalg.solve(K_mm, K_nm.T) + np.diag(sigma**2)
    sign, logdet = np.linalg.slogdet(C)
    assert sign > 0
    return float(-0.5 * (y @ np.linalg.solve(C, y) + logdet + len(y) * math.log(2.0 * math.pi)))


# ---- the pipeline ----------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """One log-likelihood evaluation: the parameters as they were set, and log p(y)."""

    theta: dict  # {gap entry: theta_uniform}
    delta: dict  # {gap entry: delta}
    sigma_scale: dict  # {group name: factor on default_sigma / config_type_sigma}
    log_likelihood: float

    def describe(self):
        parts = [f"theta[{k}]={v:.5g}" for k, v in self.theta.items()]
        parts += [f"delta[{k}]={v:.5g}" for k, v in self.delta.items()]
        parts += [f"sigma_{k}*{v:.5g}" for k, v in self.sigma_scale.items()]
        return " ".join(parts) + f": log p(y) = {self.log_likelihood:.6f}"


class Likelihood:
    """The log marginal likelihood of a fit's settings, evaluated on ``comm``'s ranks.

    ``terms(theta)`` builds the rows at the given ard_se length scales {gap entry: theta} (all
    ranks) and returns the rank-0 Terms; ``settings_for`` gives the FitSettings of a parameter set.
    The random seed is fixed once, so every evaluation uses the same sparse points."""

    def __init__(self, settings, comm=None, log=None):
        from pargap.fitting.models import draw_seed
        from pargap.fitting.structures import load_structures

        self.comm = comm or SerialComm()
        self.log = log or Log(self.comm)
        self.quiet = Log(self.comm, quiet=True)
        self.settings = dataclasses.replace(settings, rnd_seed=draw_seed(self.comm, settings.rnd_seed))
        structures, _ = load_structures(self.comm, self.settings, self.quiet)
        self.groups, self.log_sigma2 = collective(self.comm, row_noise, structures, self.settings)
        del structures
        self.counts = self.comm.allreduce(np.array([np.sum(self.groups == g) for g in range(len(GROUPS))]))

    def settings_for(self, theta=None, log_delta=None, log_scale=None):
        """FitSettings with theta_uniform {gap: value}, delta_k0 exp(log_delta[k]) and the sigmas of
        default_sigma / config_type_sigma times exp(log_scale[g])."""
        s = self.settings
        gap = []
        for k, g in enumerate(s.gap):
            changes = {}
            if theta and k in theta:
                changes["theta_uniform"] = float(theta[k])
            if log_delta is not None:
                changes["delta"] = g.delta * math.exp(log_delta[k])
            gap.append(dataclasses.replace(g, **changes))
        changes = {"gap": tuple(gap)}
        if log_scale is not None:
            c = np.exp(np.asarray(log_scale, dtype=float))
            changes["default_sigma"] = tuple(float(v * f) for v, f in zip(s.default_sigma, c))
            changes["config_type_sigma"] = {k: tuple(float(v * f) for v, f in zip(sig, c))
                                            for k, sig in s.config_type_sigma.items()}
        return dataclasses.replace(s, **changes)

    def terms(self, theta=None):
        from pargap.baselines.core_potential import load_core
        from pargap.fitting.fit import build_rows

        settings = self.settings_for(theta)
        # the rebuilds must not append to print_sparse_index (the final fit writes it once)
        settings = dataclasses.replace(settings, gap=tuple(dataclasses.replace(g, print_sparse_index=None)
                                                           for g in settings.gap))
        core = collective(self.comm, load_core, settings)  # the targets are net of a core potential
        models, _, block, _ = build_rows(settings, self.comm, self.quiet, PhaseTimer(self.comm, self.quiet),
                                         settings.rnd_seed, core)
        return gather_terms(self.comm, block, self.groups, self.log_sigma2, models, settings.sparse_jitter)

    def __call__(self, theta=None, log_delta=None, log_scale=None):
        """log p(y) at the given parameters (rebuilding the rows), the same on every rank."""
        terms = self.terms(theta)
        return on_root(self.comm, log_likelihood, terms, log_delta, log_scale)


@dataclass
class Optimum:
    settings: object  # FitSettings with the chosen hyperparameters (and the seed used)
    log_likelihood: float
    initial_log_likelihood: float
    evaluations: list  # of Evaluation, in order (rank 0; empty elsewhere)
    seconds: float


def optimise(settings, comm=None, log=None, what=("sigma", "delta", "theta"), max_rebuilds=25, xtol=0.01):
    """Hyperparameters that maximise log p(y): the noise sigmas (factors on default_sigma and
    config_type_sigma, per observation type present), delta of each gap entry and theta_uniform of
    each ard_se gap entry. ``what`` picks among "sigma", "delta", "theta". ``max_rebuilds`` bounds
    the theta steps (each rebuilds all rows); xtol: tolerance on log parameters.

    Collective: call it on every rank. Returns an Optimum, the same settings on every rank."""
    comm = comm or SerialComm()
    log = log or Log(comm)
    start = time.perf_counter()
    lik = Likelihood(settings, comm, log)
    s = lik.settings
    n_gap = len(s.gap)
    deltas = list(range(n_gap)) if "delta" in what else []
    scales = [g for g in range(4) if lik.counts[g] > 0] if "sigma" in what else []
    thetas = [k for k, g in enumerate(s.gap) if g.covariance_type == "ard_se"] if "theta" in what else []

    def check():
        unknown = set(what) - {"sigma", "delta", "theta"}
        if unknown:
            raise ConfigError(f"optimise: unknown parameter kind(s) {sorted(unknown)}; choose from sigma, delta, theta")
        for k in deltas:
            if s.gap[k].covariance_type == "ard_se" and s.gap[k].f0:
                raise ConfigError(f"optimise: gap entry {k} has f0 != 0, so delta does not scale its kernel; "
                                  "optimise without delta or set f0 = 0")
        if not (deltas or scales or thetas):
            raise ConfigError("optimise: nothing to optimise (no noise group with rows, no delta, no ard_se theta)")

    collective(comm, check)
    log(f"optimising the log marginal likelihood over "
        + ", ".join([f"theta[{k}]" for k in thetas] + [f"delta[{k}]" for k in deltas]
                    + [f"sigma_{GROUPS[g]}" for g in scales])
        + f" ({lik.counts[:4].tolist()} energy/force/virial/Hessian rows follow default_sigma, "
        f"{lik.counts[FIXED]} have sigmas from the data)")
    evaluations = []
    state = {"inner": np.zeros(len(deltas) + len(scales))}

    def unpack(x):
        log_delta = np.zeros(n_gap)
        log_scale = np.zeros(4)
        log_delta[deltas] = x[:len(deltas)]
        log_scale[scales] = x[len(deltas):]
        return log_delta, log_scale

    def evaluation(theta, x, value):
        log_delta, log_scale = unpack(x)
        return Evaluation({k: float(v) for k, v in theta.items()},
                          {k: s.gap[k].delta * math.exp(log_delta[k]) for k in deltas},
                          {GROUPS[g]: math.exp(log_scale[g]) for g in scales}, value)

    def inner(terms, theta):
        """Best (x, log p) over log delta and log c at fixed theta, on rank 0. Every evaluation is
        logged and kept."""
        seen = {}

        def negative(x):
            key = np.asarray(x, dtype=float).tobytes()
            if key not in seen:
                try:
                    value, d_delta, d_scale = log_likelihood(terms, *unpack(x), gradient=True)
                except PargapError as exc:  # a step too far: not positive definite
                    if not evaluations:
                        raise
                    log(f"  {evaluation(theta, x, np.nan).describe()}: {exc}; stepping back")
                    seen[key] = FAILED, np.zeros(len(x))
                    return seen[key]
                evaluations.append(evaluation(theta, x, value))
                log(f"  {len(evaluations)}: {evaluations[-1].describe()}")
                seen[key] = -value, -np.concatenate([d_delta[deltas], d_scale[scales]])
            return seen[key]

        bounds = [(-BOUND, BOUND)] * len(state["inner"])
        upper = delta_bounds(terms, n_gap)
        for i, k in enumerate(deltas):
            bounds[i] = (-BOUND, max(-BOUND, min(BOUND, upper[k])))
        x0 = np.clip(state["inner"], [b[0] for b in bounds], [b[1] for b in bounds]) if bounds else state["inner"]
        first = -negative(x0)[0]
        state.setdefault("initial", first)
        if len(x0) == 0:
            return x0, first
        result = scipy.optimize.minimize(negative, x0, method="L-BFGS-B", jac=True, bounds=bounds,
                                         options={"ftol": 1e-12, "gtol": 1e-6, "maxiter": 500})
        names = [f"delta[{k}]" for k in deltas] + [f"sigma_{GROUPS[g]}" for g in scales]
        at_bound = [name for name, v, (lo, hi) in zip(names, result.x, bounds) if v < lo + 1e-3 or v > hi - 1e-3]
        if at_bound:
            log(f"  {', '.join(at_bound)} at its bound (a factor 1000 from the start, or for delta the "
                "largest that keeps K_MM + jitter positive definite; raise sparse_jitter to go further): "
                "a delta driven to its lower bound means the term is not needed")
        return result.x, -float(result.fun)

    profiles = {}

    def profile(log_theta):
        """-max log p at theta = theta_0 exp(log_theta); on every rank (a point seen before is not
        rebuilt: every rank has the same cache)."""
        key = np.asarray(log_theta, dtype=float).tobytes()
        if key not in profiles:
            profiles[key] = _profile(log_theta)
        return profiles[key]

    def _profile(log_theta):
        theta = {k: s.gap[k].theta_uniform * math.exp(v) for k, v in zip(thetas, log_theta)}
        state["rebuilds"] = state.get("rebuilds", 0) + 1
        log(f"rows {state['rebuilds']}: " + (" ".join(f"theta[{k}]={v:.5g}" for k, v in theta.items()) or "as set"))
        terms = lik.terms(theta)
        x, value = on_root(comm, inner, terms, theta)
        state["inner"] = x
        state.setdefault("best", (np.inf, None))
        if -value < state["best"][0]:
            state["best"] = (-value, (theta, x))
        return -value

    if thetas:
        x0 = np.zeros(len(thetas))
        bounds = [(-math.log(20.0), math.log(20.0))] * len(thetas)
        simplex = np.vstack([x0] + [x0 + 0.4 * e for e in np.eye(len(thetas))])
        options = {"initial_simplex": simplex, "xatol": xtol, "fatol": 0.01, "maxfev": max_rebuilds}
        _drive(comm, profile, lambda f: scipy.optimize.minimize(f, x0, method="Nelder-Mead", bounds=bounds,
                                                                options=options))
    else:
        profile(np.zeros(0))
    initial = comm.bcast(state.get("initial"))
    value, (theta, x) = state["best"]
    log_delta, log_scale = unpack(x)
    chosen = lik.settings_for(theta, log_delta if deltas else None, log_scale if scales else None)
    chosen = comm.bcast(chosen)
    seconds = time.perf_counter() - start
    log(f"optimised: log p(y) {initial:.6f} -> {-value:.6f} in {state['rebuilds']} row builds and "
        f"{comm.bcast(len(evaluations))} evaluations, {seconds:.2f} s")
    return Optimum(chosen, -value, initial, evaluations, seconds)


def _drive(comm, objective, optimiser):
    """Run ``optimiser(f)`` on rank 0, where f(x) broadcasts x and evaluates ``objective(x)`` on every
    rank; the other ranks evaluate the broadcast points until told to stop. An error raised on
    all ranks (CollectiveError) leaves every rank's loop alike."""
    if comm.Get_rank() == 0:
        def f(x):
            comm.bcast(np.asarray(x, dtype=float))
            return objective(np.asarray(x, dtype=float))

        result = optimiser(f)
        comm.bcast(None)
        return result
    while (x := comm.bcast(None)) is not None:
        objective(x)
    return None


__all__ = ["GROUPS", "Likelihood", "Optimum", "dense_log_likelihood", "log_likelihood", "optimise", "row_noise"]
