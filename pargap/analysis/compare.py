"""Structure comparison: global similarity kernels built from local SOAP kernels.

For structures A (N environments p_i^A) and B (M environments p_j^B) the local kernel matrix is

    C_ij = (p_i^A . p_j^B)^zeta   if centre species Z_i^A = Z_j^B, else 0        (N, M)

(the SOAP and the ``dot_product`` kernel of a fit, delta = 1). Three global kernels:

    average:    K(A, B) = (1 / N M) sum_ij C_ij
    bestmatch:  K(A, B) = (1 / N) max_pi sum_i C_{i pi(i)}        (N = M, optimal assignment)
    rematch:    K(A, B) = sum_ij P_ij C_ij,
                P = argmin_P sum_ij P_ij (1 - C_ij + gamma ln P_ij),  P >= 0,
                    sum_j P_ij = 1/N,  sum_i P_ij = 1/M               (entropy-regularised transport)

each normalised as K~(A, B) = K(A, B) / sqrt(K(A, A) K(B, B)), so that K~(A, A) = 1. REMatch tends
to bestmatch as gamma -> 0 and to average as gamma -> infinity. Distances: d = sqrt(2 - 2 K~).

Several species: one Soap per centre species Z with every species of the database as neighbours
(as a fit's species expansion); a structure's environments are the concatenated per-atom vectors
with their centre species. Everything here is pure numpy on local arrays; MPI lives in
``pargap.cli.compare``.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

from pargap.errors import PargapError

KERNELS = ("average", "rematch", "bestmatch")
SOAP_KEYS = ("cutoff", "cutoff_transition_width", "l_max", "n_max", "atom_sigma", "central_weight",
             "normalise", "basis_error_exponent", "central_reference_all_species")


@dataclass(frozen=True)
class Environments:
    """The SOAP environments of one structure: X (N, D) unit vectors, Z (N,) centre species."""

    X: np.ndarray
    Z: np.ndarray

    def __len__(self):
        return len(self.Z)


def as_environments(A):
    """An Environments, or an (N, D) array taken as N environments of one species."""
    if isinstance(A, Environments):
        return A
    X = np.atleast_2d(np.asarray(A, dtype=float))
    return Environments(X, np.zeros(len(X), dtype=int))


class StructureSoap:
    """SOAP environments of whole structures: one ``Soap`` per centre species in ``species``,
    every species of ``species`` as a neighbour channel (gap_fit's add_species for soap).

    species: atomic numbers of the whole database (the same list for every structure compared,
    so that all vectors live in one space). Other keywords: ``Soap``'s hyperparameters."""

    def __init__(self, species, **soap):
        from pargap.descriptors.soap import Soap

        unknown = sorted(set(soap) - set(SOAP_KEYS))
        if unknown:
            raise PargapError(f"soap: unsupported settings {unknown}; supported: {', '.join(SOAP_KEYS)}")
        self.species = [int(z) for z in species]
        if not self.species:
            raise PargapError("soap: no species (empty structures?)")
        self.params = dict(soap)
        try:
            self.soaps = {z: Soap(**soap, n_species=len(self.species), species_Z=self.species, Z=z)
                          for z in self.species}
        except (TypeError, ValueError) as exc:
            raise PargapError(str(exc)) from None

    def __call__(self, atoms):
        """Environments of one ase.Atoms, grouped by centre species in ``species`` order."""
        missing = set(np.unique(atoms.numbers).tolist()) - set(self.species)
        if missing:
            raise PargapError(f"structure has species {sorted(missing)} not in the species list {self.species}")
        X, Z = [], []
        for z, soap in self.soaps.items():
            x = soap.compute(atoms).x
            X.append(x)
            Z.append(np.full(len(x), z))
        return Environments(np.concatenate(X), np.concatenate(Z))


def species_of(frames):
    """Atomic numbers present in the frames, in order of first appearance (a fit's order)."""
    seen = {}
    for atoms in frames:
        for z in atoms.numbers.tolist():
            seen.setdefault(int(z), None)
    return list(seen)


def local_kernel(A, B, zeta):
    """C_ij = (p_i^A . p_j^B)^zeta for equal centre species, else 0; (N, M)."""
    A, B = as_environments(A), as_environments(B)
    dots = A.X @ B.X.T
    C = dots ** int(zeta) if float(zeta).is_integer() else np.power(dots, zeta)
    return np.where(A.Z[:, None] == B.Z[None, :], C, 0.0)


def rematch_plan(C, gamma, tol=1e-10, max_iter=1000):
    """The REMatch transport plan P (N, M) for the local kernel C and regularisation gamma > 0.

    P_ij = exp((f_i + g_j - c_ij) / gamma), c = 1 - C, with the dual potentials f, g maximising
        F(f, g) = a.f + b.g - gamma sum_ij P_ij,      a_i = 1/N, b_j = 1/M
    (stationary exactly when P has row sums a and column sums b). Everything is in the log domain
    (no under/overflow however small gamma is):
    1. Sinkhorn iterations, with gamma reached by halving from max(c) - min(c) (epsilon scaling,
       warm starts):
           f_i = gamma ln a_i - gamma logsumexp_j ((g_j - c_ij) / gamma)
           g_j = gamma ln b_j - gamma logsumexp_i ((f_i - c_ij) / gamma)
    2. Newton steps on F with a backtracking line search (Sinkhorn alone stalls when C is nearly
       block diagonal, e.g. C_ij = 0 between species with different proportions in A and B):
           [[diag(P 1), P], [P^T, diag(P^T 1)]] (df, dg) = gamma (a - P 1, b - P^T 1),
       the gauge (f + t, g - t) fixed by dg_M = 0, a 1e-9 relative diagonal shift and each
       potential changed by at most 5 gamma per step (the Hessian is nearly singular when C_ij = 0
       between species splits it into nearly disconnected blocks).
    Converged when every row and column sum matches a, b to ``tol`` relative."""
    return rematch_plans(np.asarray(C, dtype=float)[None], gamma, tol, max_iter)[0]


def rematch_plans(C, gamma, tol=1e-10, max_iter=1000):
    """``rematch_plan`` for a batch of local kernels of one shape, C (B, N, M) -> P (B, N, M);
    the iterations run on all pairs at once (each pair stops when it has converged)."""
    C = np.asarray(C, dtype=float)
    nb, N, M = C.shape
    if not gamma > 0:
        raise PargapError(f"rematch: gamma must be positive, got {gamma}")
    c = 1.0 - C
    log_a, log_b = -np.log(N), -np.log(M)
    f, g = np.zeros((nb, N)), np.zeros((nb, M))

    def sinkhorn(f, g, c, eps, sweeps):
        for _ in range(sweeps):
            f = eps * (log_a - logsumexp((g[:, None, :] - c) / eps, axis=2))
            g = eps * (log_b - logsumexp((f[:, :, None] - c) / eps, axis=1))
        return f, g

    spread = float(np.max(np.ptp(c.reshape(nb, -1), axis=1))) if c.size else 0.0
    eps = gamma
    while eps < spread:
        eps *= 2.0
    while eps > gamma:
        f, g = sinkhorn(f, g, c, eps, 5)
        eps *= 0.5
    f, g = sinkhorn(f, g, c, gamma, 10)

    def plan(f, g, c):
        with np.errstate(over="ignore"):
            return np.exp((f[:, :, None] + g[:, None, :] - c) / gamma)

    def marginal_error(P):
        return np.maximum(np.max(np.abs(1.0 / N - P.sum(axis=2)), axis=1) * N,
                          np.max(np.abs(1.0 / M - P.sum(axis=1)), axis=1) * M)

    def dual(f, g, c):
        with np.errstate(over="ignore"):
            return (f.sum(axis=1) / N + g.sum(axis=1) / M
                    - gamma * np.exp(logsumexp((f[:, :, None] + g[:, None, :] - c) / gamma, axis=(1, 2))))

    diag = np.arange(N + M - 1)
    error = np.full(nb, np.inf)
    for _ in range(max_iter):
        P = plan(f, g, c)
        error = marginal_error(P)
        act = np.flatnonzero(~(error < tol))
        if len(act) == 0:
            return P
        Pa, ca, fa, ga, ea = P[act], c[act], f[act], g[act], error[act]
        rows, cols = Pa.sum(axis=2), Pa.sum(axis=1)
        r, s = 1.0 / N - rows, 1.0 / M - cols
        H = np.zeros((len(act), N + M, N + M))
        H[:, :N, :N][:, np.arange(N), np.arange(N)] = rows
        H[:, N:, N:][:, np.arange(M), np.arange(M)] = cols
        H[:, :N, N:] = Pa
        H[:, N:, :N] = Pa.transpose(0, 2, 1)
        H = H[:, :-1, :-1]
        H[:, diag, diag] += 1e-9 * np.max(H[:, diag, diag], axis=1)[:, None]
        rhs = np.concatenate([r, s[:, :-1]], axis=1)
        step = gamma * np.linalg.solve(H, rhs[:, :, None])[:, :, 0]
        cap = 5.0 * gamma / np.maximum(np.max(np.abs(step), axis=1), 1e-300)
        step *= np.minimum(1.0, cap)[:, None]
        df, dg = step[:, :N], np.concatenate([step[:, N:], np.zeros((len(act), 1))], axis=1)
        F0 = dual(fa, ga, ca)
        slope = np.einsum("bi,bi->b", r, df) + np.einsum("bj,bj->b", s, dg)
        t = np.ones(len(act))
        todo = np.ones(len(act), dtype=bool)
        while todo.any() and t[todo][0] > 1e-10:
            k = np.flatnonzero(todo)
            ft, gt = fa[k] + t[k, None] * df[k], ga[k] + t[k, None] * dg[k]
            # Armijo on F; near the solution F is flat to round-off, so a step that halves the
            # marginal error is accepted as well
            ok = (dual(ft, gt, ca[k]) >= F0[k] + 1e-4 * t[k] * slope[k]) | \
                 (marginal_error(plan(ft, gt, ca[k])) < 0.5 * ea[k])
            todo[k[ok]] = False
            t[k[~ok]] *= 0.5
        fa, ga = fa + t[:, None] * df, ga + t[:, None] * dg
        if todo.any():  # no ascent along Newton: fall back to Sinkhorn sweeps
            k = np.flatnonzero(todo)
            fa[k], ga[k] = sinkhorn(fa[k], ga[k], ca[k], gamma, 100)
        f[act], g[act] = fa, ga
    raise PargapError(f"rematch: the transport plan did not converge for gamma={gamma} (marginal error "
                      f"{np.max(error):.1e}); try a larger gamma, or --kernel bestmatch for the gamma -> 0 limit")


def rematch_values(Cs, gamma):
    """K = sum_ij P_ij C_ij for a list of local kernels (any shapes), batched by shape; (len,)."""
    out = np.empty(len(Cs))
    groups = {}
    for k, C in enumerate(Cs):
        groups.setdefault(np.shape(C), []).append(k)
    for ks in groups.values():
        batch = np.stack([Cs[k] for k in ks])
        for start in range(0, len(ks), 512):  # bounded memory
            part = batch[start:start + 512]
            out[ks[start:start + 512]] = np.einsum("bij,bij->b", rematch_plans(part, gamma), part)
    return out


def raw_kernel(C, kernel="average", gamma=None):
    """The unnormalised global kernel K(A, B) of a local kernel matrix C (N, M)."""
    C = np.asarray(C, dtype=float)
    if kernel == "average":
        return float(C.mean())
    if kernel == "bestmatch":
        N, M = C.shape
        if N != M:
            raise PargapError(f"bestmatch needs equal numbers of environments, got {N} and {M}; "
                              "use --kernel rematch (a small gamma approaches the best match)")
        rows, cols = linear_sum_assignment(C, maximize=True)
        return float(C[rows, cols].sum() / N)
    if kernel == "rematch":
        if gamma is None:
            raise PargapError("rematch needs gamma")
        return float(np.sum(rematch_plan(C, gamma) * C))
    raise PargapError(f"unknown kernel '{kernel}'; supported: {', '.join(KERNELS)}")


def structure_kernel(A, B, *, zeta, kernel="average", gamma=None):
    """K~(A, B) = K(A, B) / sqrt(K(A, A) K(B, B)) for environments A and B (Environments or
    (N, D) arrays of unit SOAP vectors)."""
    A, B = as_environments(A), as_environments(B)
    K_ab = raw_kernel(local_kernel(A, B, zeta), kernel, gamma)
    K_aa = raw_kernel(local_kernel(A, A, zeta), kernel, gamma)
    K_bb = raw_kernel(local_kernel(B, B, zeta), kernel, gamma)
    return K_ab / np.sqrt(K_aa * K_bb)


def self_kernels(envs, *, zeta, kernel="average", gamma=None):
    """K(A, A) (unnormalised) of each structure; (n,)."""
    if kernel == "rematch":
        return rematch_values([local_kernel(A, A, zeta) for A in envs], gamma)
    return np.array([raw_kernel(local_kernel(A, A, zeta), kernel, gamma) for A in envs])


def raw_block(envs_a, envs_b, *, zeta, kernel="average", gamma=None):
    """Unnormalised K(A_i, B_j) for lists of environments; (n_a, n_b).

    One matrix product over all stacked environments; then segment sums (average), batched
    REMatch solves over the pairs of each shape (rematch) or one assignment per pair (bestmatch)."""
    n_a, n_b = len(envs_a), len(envs_b)
    if n_a == 0 or n_b == 0:
        return np.zeros((n_a, n_b))
    XA = Environments(np.concatenate([e.X for e in envs_a]), np.concatenate([e.Z for e in envs_a]))
    XB = Environments(np.concatenate([e.X for e in envs_b]), np.concatenate([e.Z for e in envs_b]))
    C = local_kernel(XA, XB, zeta)
    la = np.array([len(e) for e in envs_a])
    lb = np.array([len(e) for e in envs_b])
    if kernel == "average" and la.all() and lb.all():
        sa, sb = np.r_[0, np.cumsum(la)[:-1]], np.r_[0, np.cumsum(lb)[:-1]]
        S = np.add.reduceat(np.add.reduceat(C, sa, axis=0), sb, axis=1)
        return S / np.outer(la, lb)
    oa, ob = np.r_[0, np.cumsum(la)], np.r_[0, np.cumsum(lb)]
    if kernel == "rematch":
        if gamma is None:
            raise PargapError("rematch needs gamma")
        Cs = [C[oa[i]:oa[i + 1], ob[j]:ob[j + 1]] for i in range(n_a) for j in range(n_b)]
        return rematch_values(Cs, gamma).reshape(n_a, n_b)
    out = np.empty((n_a, n_b))
    for i in range(n_a):
        for j in range(n_b):
            out[i, j] = raw_kernel(C[oa[i]:oa[i + 1], ob[j]:ob[j + 1]], kernel, gamma)
    return out


def normalise(K_raw, diag_a, diag_b):
    """K~_ij = K_ij / sqrt(K(A_i, A_i) K(B_j, B_j))."""
    return K_raw / np.sqrt(np.outer(diag_a, diag_b))


def kernel_matrix(frames_a, frames_b=None, *, soap, zeta, kernel="average", gamma=None, species=None):
    """The normalised similarity matrix (n_a, n_b) of ase.Atoms lists (frames_b None: frames_a
    with itself), on one process. soap: ``Soap`` hyperparameters (dict: l_max, n_max, cutoff,
    atom_sigma, ...); species: the neighbour/centre species (default: all in the frames)."""
    if kernel not in KERNELS:
        raise PargapError(f"unknown kernel '{kernel}'; supported: {', '.join(KERNELS)}")
    both = list(frames_a) + (list(frames_b) if frames_b is not None else [])
    structure_soap = StructureSoap(species if species is not None else species_of(both), **soap)
    envs_a = [structure_soap(a) for a in frames_a]
    envs_b = envs_a if frames_b is None else [structure_soap(b) for b in frames_b]
    diag_a = self_kernels(envs_a, zeta=zeta, kernel=kernel, gamma=gamma)
    diag_b = diag_a if frames_b is None else self_kernels(envs_b, zeta=zeta, kernel=kernel, gamma=gamma)
    return normalise(raw_block(envs_a, envs_b, zeta=zeta, kernel=kernel, gamma=gamma), diag_a, diag_b)


def kernel_distance(K):
    """d = sqrt(2 - 2 K~) (clipped at 0 against round-off)."""
    return np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(K), 0.0))


def farthest_point_selection(K, k):
    """Indices of k diverse structures from a normalised kernel matrix (n, n): start with the
    structure of largest mean distance d = sqrt(2 - 2K) to all others, then repeatedly add the
    one whose distance to the nearest selected structure is largest (ties: lowest index)."""
    D = kernel_distance(K)
    n = len(D)
    if not 1 <= k <= n:
        raise PargapError(f"select: need 1 <= K <= {n} structures, got {k}")
    chosen = [int(np.argmax(D.mean(axis=1)))]
    nearest = D[chosen[0]].copy()
    for _ in range(k - 1):
        nearest[chosen] = -1.0
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, D[nxt])
    return chosen


def kernel_pca(K, n_components=2):
    """Kernel PCA coordinates (n, n_components): the centred kernel H K H (H = I - 11^T/n) has
    eigenpairs (lambda_k, u_k), descending; coordinates sqrt(lambda_k) u_k."""
    K = np.asarray(K, dtype=float)
    n = len(K)
    H = np.eye(n) - 1.0 / n
    w, U = np.linalg.eigh(H @ K @ H)
    order = np.argsort(w)[::-1][:n_components]
    w, U = np.maximum(w[order], 0.0), U[:, order]
    U = U * np.where(U[np.argmax(np.abs(U), axis=0), range(U.shape[1])] < 0, -1.0, 1.0)  # fixed sign
    return U * np.sqrt(w)


# --------------------------------------------------------------------------------------------
# The block layout of a distributed kernel matrix (pure: testable without MPI)


@dataclass(frozen=True)
class Tile:
    """Rows [r0, r1) of A by columns [c0, c1) of B; ``mirror``: also fill the transposed block
    (symmetric matrix, off-diagonal tile)."""

    r0: int
    r1: int
    c0: int
    c1: int
    mirror: bool = False


def plan_tiles(n_a, n_b, symmetric, tile):
    """Tiles of ``tile`` x ``tile`` structures covering the (n_a, n_b) matrix; for a symmetric
    matrix only the tiles on and above the diagonal. Independent of the rank count, so that every
    entry is computed by the same arithmetic whatever P is."""
    edges_a = list(range(0, n_a, tile)) + [n_a]
    edges_b = list(range(0, n_b, tile)) + [n_b]
    tiles = []
    for I in range(len(edges_a) - 1):
        for J in range(len(edges_b) - 1):
            if symmetric and J < I:
                continue
            tiles.append(Tile(edges_a[I], edges_a[I + 1], edges_b[J], edges_b[J + 1], symmetric and J > I))
    return tiles


def tile_cost(t, n_atoms_a, n_atoms_b):
    """Work of a tile ~ number of local kernel entries, sum_i N_i x sum_j M_j."""
    return float(np.sum(n_atoms_a[t.r0:t.r1])) * float(np.sum(n_atoms_b[t.c0:t.c1]))
