"""The E-step in two forms, and the error bound that chooses between them.

Both forms return the same ``SuffStats`` structure, so ``m_step`` (and ``lax.cond``) treat them
alike:

* **exact** (whitened residuals): ``z_nk = L_k^T (y_n - m_k)`` with the difference taken
  *before* any product, ``log N = -1/2 |z|^2 + log det L_k - D/2 log 2pi``; the second moments
  are those of ``z`` (about the current means, in the coordinates of the current precisions),
  where the next covariance is close to the identity. Nothing cancels in float32: the mean
  log-likelihood matches float64 to about 1e-7 relative on data whose covariances are
  ill-conditioned (sklearn's digits with ``reg_covar=1e-6``), and EM stays monotone there.
  Cost: two batched GEMMs of N K D^2 (full), N K D elementwise work (diagonal types). On the
  CPU, where many components share the rows, the same statistics come cheaper from the
  expanded form in float64 arithmetic (``expanded64_moments``); :func:`exact_kernel` picks
  between the two kernels by shape.
* **fast** (expanded): the natural-parameter GEMMs ``phi @ Theta`` and ``R^T phi`` of
  ``gmm_jax.natural`` (full and diagonal types; ``phi`` can be cached because the data are
  fixed), or ``X @ L`` plus cross terms (tied). About half the work of the exact form, but it
  loses ``eps * |L^T y|^2`` to cancellation, which is large when a component is tight in a
  direction in which it sits far from the data mean.

:func:`fast_error_bound` bounds that loss from the parameters alone (no pass over the data):
per component ``eps * (1/2 u^T |P| u + |P m|^T u + |c|)`` with ``u_i = sqrt(Sigma_ii + m_i^2)``,
averaged with the weights. EM takes the fast form in an iteration only when the bound is below
``FAST_RTOL * max(1, |mean log-likelihood|)`` for every model in the program (one ``lax.cond``
per iteration), and records which form ran. The first E-step has no log-likelihood yet; it
uses :func:`log_density_ceiling` instead (no log-density exceeds it, so a negative ceiling
bounds ``|mean log-likelihood|`` from below); on backends other than the CPU "auto" runs the
exact form (``AUTO_FAST_BACKENDS``). On the data sets checked (digits, Fashion-MNIST,
synthetic mixtures, offsets and scalings) the bound exceeded the actual float32 error by 4x to
400x.

Rows are processed in chunks (``gmm_jax.chunking``); rows of zero weight (padding) contribute
nothing.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax import natural
from gmm_jax._jit import in_user_transform
from gmm_jax.chunking import sum_over_chunks
from gmm_jax.linalg import einsum, mm
from gmm_jax.types import GMMParams, SuffStats

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)
HIGHEST = jax.lax.Precision.HIGHEST

#: The fast form is used when its error bound is below this times max(1, |mean log-likelihood|).
FAST_RTOL = 1e-5
METHODS = ("auto", "exact", "fast")
#: Exact kernel: "auto" (expanded float64 on CPU, whitened residuals elsewhere), "whitened" or
#: "expanded64" (tests set it to check both on one machine).
EXACT_KERNEL = "auto"
ASSIGNMENTS = ("soft", "hard")
#: Backends on which ``method="auto"`` lets the error bound pick the fast form (a ``lax.cond``
#: between the two forms); on any other backend "auto" runs the exact form. On an H100 (jax
#: 0.11.2) ``e_step(method="auto")`` returned the fast form's log-likelihood (0.34 nats per
#: sample off float64 on digits + 1e4, K=4, full and tied) although the bound, evaluated the same
#: way under jit, chose the exact form; the cause was not found in the device time available.
#: There the fast form alone was 0.26-0.34 nats off, 30x its error bound (9.6e-3; on the CPU the
#: same parameters give 1.3e-3), so the bound, derived for float32 rounding, does not hold for
#: the GPU's products either. Accelerators run the exact form until both are shown to work
#: there. ``method="fast"`` still runs the fast form anywhere.
AUTO_FAST_BACKENDS = ("cpu",)


def resolve_method(method: str) -> str:
    """``method`` with ``"auto"`` replaced by ``"exact"`` on backends outside
    ``AUTO_FAST_BACKENDS`` (decided when tracing)."""
    if method == "auto" and jax.default_backend() not in AUTO_FAST_BACKENDS:
        return "exact"
    return method


def check_method(method: str, *, kernels: bool = False) -> str:
    """Validates an E-step method; ``kernels=True`` also accepts the exact kernels by name."""
    allowed = METHODS + (("whitened", "expanded64") if kernels else ())
    if method not in allowed:
        raise ValueError(f"method must be one of {allowed}, got {method!r}.")
    return method


def check_assignment(assignment: str) -> str:
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be 'soft' or 'hard', got {assignment!r}.")
    return assignment


def has_features(covariance_type: str) -> bool:
    """Whether the fast form of this type uses (cacheable) natural-parameter features."""
    return covariance_type != "tied"


# ----------------------------------------------------------------------------------- the bound
def fast_error_bound(params: GMMParams) -> Array:
    """() Bound on the float error (nats per sample) of the fast form's mean log-likelihood.

    ``params`` must be expressed about the point the data are centred on. The same quantity
    bounds the cancellation in the fast form's covariance update (``Sk / Nk - m m^T`` about the
    data mean) relative to the covariance itself.

    Example:
        >>> import jax.numpy as jnp, gmm_jax
        >>> from gmm_jax.estep import fast_error_bound
        >>> p = gmm_jax.params_from_covariances(jnp.array([0.5, 0.5]),
        ...     jnp.array([[0.0], [3.0]]), jnp.array([1.0, 1.0]), "spherical")
        >>> bool(fast_error_bound(p) < 1e-5)
        True
    """
    ct = params.covariance_type
    k, d = params.means.shape
    m = params.means
    dtype = m.dtype
    eps = jnp.finfo(dtype).eps
    pc = cov.expand_precision_cholesky(params.precisions_cholesky, ct, k, d)
    var = cov.expand_covariances(params.covariances, ct, k, d)
    if cov.is_matrix(ct):
        P = mm(pc, jnp.swapaxes(pc, -1, -2))
        var = jnp.diagonal(var, axis1=-2, axis2=-1)
        u = jnp.sqrt(jnp.maximum(var, 0.0) + m**2)
        quad = 0.5 * einsum("kd,kde,ke->k", u, jnp.abs(P), u)
        b = einsum("kde,ke->kd", P, m)
    else:
        p = pc**2
        u = jnp.sqrt(jnp.maximum(var, 0.0) + m**2)
        quad = 0.5 * jnp.sum(p * u**2, axis=-1)
        b = p * m
    log_det = jnp.broadcast_to(cov.log_det_cholesky(params.precisions_cholesky, ct, d), (k,))
    const = log_det - 0.5 * d * _LOG_2PI - 0.5 * jnp.sum(b * m, axis=-1)
    beta = eps * (quad + jnp.sum(jnp.abs(b) * u, axis=-1) + jnp.abs(const))
    beta = jnp.where(params.weights > 0, beta, 0.0)
    bound = jnp.sum(params.weights * beta)
    return jnp.where(jnp.isfinite(bound), bound, jnp.inf)


def log_density_ceiling(params: GMMParams) -> Array:
    """() Upper bound on the mixture's log-density anywhere: ``max_k log N(mu_k | mu_k, S_k)``.

    ``log sum_k w_k N(x | k) <= max_k max_x log N(x | k)`` since the weights sum to one, so a
    negative ceiling bounds the magnitude of any mean log-likelihood from below, before a pass
    over the data (only active components count).
    """
    ct = params.covariance_type
    k, d = params.means.shape
    log_det = jnp.broadcast_to(cov.log_det_cholesky(params.precisions_cholesky, ct, d), (k,))
    top = jnp.max(jnp.where(params.weights > 0, log_det, -jnp.inf))
    return top - 0.5 * d * _LOG_2PI


def fast_is_safe(bound: Array, log_likelihood: Array) -> Array:
    """Whether a bound is small enough for the fast form (``-inf``/NaN ``log_likelihood``: no):
    at most ``FAST_RTOL * max(1, |log_likelihood|)``."""
    scale = jnp.maximum(1.0, jnp.abs(log_likelihood))
    return jnp.isfinite(log_likelihood) & (bound <= FAST_RTOL * scale)


def fast_form_ok(params: GMMParams, log_likelihood: Array, first) -> Array:
    """Whether the fast form may run the E-step of ``params`` (centred; one model).

    ``log_likelihood`` is the previous E-step's mean log-likelihood; for the first E-step
    (``first`` true, no log-likelihood yet) the scale is ``max(1, -log_density_ceiling)``.
    """
    # |ll| >= -ceiling where the ceiling is negative; min(., -1) keeps the scale's floor of 1
    ll = jnp.where(first, jnp.minimum(log_density_ceiling(params), -1.0), log_likelihood)
    return fast_is_safe(fast_error_bound(params), ll)


# ----------------------------------------------------------------------------- bank kernels
# The kernels below work on a *bank* of R models at once: every leaf of ``params`` has a
# leading model axis R. Per-row work (features, residual GEMMs) is shared and the GEMMs are
# wide: (n, F) @ (F, R K) rather than R products of width K.

def _log_weights(params: GMMParams) -> Array:
    return cov.safe_log_weights(params.weights)


def _bank_posterior(lp: Array, w: Array, labels: Array | None, assignment: str,
                    rows_first: bool = False):
    """Posterior of a bank over its component axis; w (n,) or (R, n), labels None or (n,).

    Components first (the default): lp (R, K, n) -> (wr (R, K, n), ll (R, n)). Rows first
    (static ``rows_first``): lp (n, R, K) -> (wr (n, R, K), ll (n, R)). The fast form's
    log-densities come out of ``phi @ theta`` as (n, R K); reducing over the minor K axis and
    contracting the rows in the M-step GEMM saves the (R K, n) transpose, which XLA's CPU
    backend otherwise folds into a slower GEMM. Used for a single model (R = 1): a diag fit at
    N=100k, D=K=32 went from 20.7 to 13.6 ms per iteration, spherical from 22 to 14, full from
    113-124 to 107-115. Banks keep the components first: with 16 restarts of K = 8 (D = 8,
    full) rows first made the chunk 25-30% slower.
    """
    axis = 2 if rows_first else 1
    k = lp.shape[axis]

    def like_ll(v):  # a per-row array, (n,) or (R, n), laid out like ll
        if not rows_first:
            return v
        return v.T if v.ndim == 2 else v[:, None]

    if assignment == "hard":
        best = jnp.argmax(lp, axis=axis)
        ll = jnp.max(lp, axis=axis)
        r = jax.nn.one_hot(best, k, axis=axis, dtype=lp.dtype)
    else:
        # one exp per (model, component, row), not two (logsumexp's and the posterior's)
        top = jax.lax.stop_gradient(jnp.max(lp, axis=axis, keepdims=True))
        top = jnp.where(jnp.isfinite(top), top, 0.0)
        e = jnp.exp(lp - top)
        total = jnp.sum(e, axis=axis, keepdims=True)
        ll = jnp.squeeze(top + jnp.log(total), axis)
        r = e / total
    if labels is not None:
        known = jnp.broadcast_to(like_ll(labels >= 0), ll.shape)
        lab = jnp.broadcast_to(like_ll(jnp.where(labels >= 0, labels, 0)), ll.shape)
        r = jnp.where(jnp.expand_dims(known, axis),
                      jax.nn.one_hot(lab, k, axis=axis, dtype=lp.dtype), r)
        picked = jnp.take_along_axis(lp, jnp.expand_dims(lab, axis), axis=axis)
        ll = jnp.where(known, jnp.squeeze(picked, axis), ll)
    wb = jnp.broadcast_to(like_ll(w), ll.shape)
    ll = jnp.where(wb > 0, ll, 0.0)
    return r * jnp.expand_dims(wb, axis), ll


def _flat(a: Array, cols) -> Array:
    """Leading (R, K) axes flattened, then the active columns ``cols`` (static) taken."""
    flat = a.reshape((-1,) + a.shape[2:])
    return flat if cols is None else flat[np.asarray(cols)]


def _unflat(a: Array, cols, r: int, k: int, fill) -> Array:
    """Inverse of :func:`_flat`: (A, ...) back to (R, K, ...), ``fill`` in inactive slots."""
    if cols is None:
        return a.reshape((r, k) + a.shape[1:])
    out = jnp.full((r * k,) + a.shape[1:], fill, a.dtype).at[np.asarray(cols)].set(a)
    return out.reshape((r, k) + a.shape[1:])


def bank_exact_moments(params: GMMParams, Y: Array, w: Array, labels: Array | None,
                       assignment: str, cols=None):
    """Exact-form moments of one chunk for a bank: (Nk, Fk, Sk, sum_ll), leading axis R.

    ``Fk`` is ``sum_n r_nk (y_n - m_k)`` in data coordinates; ``Sk`` the whitened second
    moments (see ``SuffStats``). ``cols`` (static) lists the flat indices ``r * K + k`` of the
    active components; the work is done for those only (inactive slots get ``-inf``).
    """
    ct = params.covariance_type
    r, k, d = params.means.shape
    batched = (((1,), (1,)), ((0,), (0,)))
    m = _flat(params.means, cols)  # (A, D)
    diff = Y[None, :, :] - m[:, None, :]  # (A, n, D), before any product
    pc = params.precisions_cholesky
    if cov.is_matrix(ct):
        pcx = jax.vmap(lambda a: cov.expand_precision_cholesky(a, ct, k, d))(pc)  # (R,K,D,D)
        z = jax.lax.dot_general(diff, _flat(pcx, cols), (((2,), (1,)), ((0,), (0,))),
                                precision=HIGHEST)
    else:
        s = jax.vmap(lambda a: cov.expand_precision_cholesky(a, ct, k, d))(pc)  # (R, K, D)
        z = diff * _flat(s, cols)[:, None, :]
    maha = _unflat(jnp.sum(jnp.square(z), axis=-1), cols, r, k, jnp.inf)  # (R, K, n)
    log_det = jax.vmap(lambda a: jnp.broadcast_to(cov.log_det_cholesky(a, ct, d), (k,)))(pc)
    lp = (log_det + _log_weights(params) - 0.5 * d * _LOG_2PI)[:, :, None] - 0.5 * maha
    wr, ll = _bank_posterior(lp, w, labels, assignment)
    Nk = jnp.sum(wr, axis=-1)  # (R, K)
    wa = _flat(wr, cols)  # (A, n)
    # sum_n r_nk (y_n - m_k) from the residuals themselves: a component whose members share a
    # value in some feature gets exactly that value as its mean (with R^T Y - N m it would be
    # off by rounding, which the precision of a tight component magnifies)
    Fk = _unflat(jax.lax.dot_general(wa, diff, batched, precision=HIGHEST), cols, r, k, 0.0)
    if cov.is_matrix(ct):
        Sa = jax.lax.dot_general(z * wa[..., None], z, batched, precision=HIGHEST)  # (A, D, D)
        Sk = _unflat(Sa, cols, r, k, 0.0)
        if ct == "tied":
            Sk = jnp.sum(Sk, axis=1)
    else:
        # a batched dot: XLA's CPU reductions over a middle axis are ~50x slower
        Sk = _unflat(jax.lax.dot_general(wa, jnp.square(z), batched, precision=HIGHEST), cols,
                     r, k, 0.0)
    wb = jnp.broadcast_to(w, ll.shape)
    return Nk, Fk, Sk, jnp.sum(wb * ll, axis=-1)


def expanded_pays(covariance_type: str, n_components: int | None, d: int | None) -> bool:
    """Whether the expanded64 kernel is the faster exact kernel on CPU for this shape.

    Its cost is dominated by forming the (rows, F) float64 features once per row whatever the
    number of components (F ~ D^2 / 2 for full covariances, 2D + 1 otherwise); the whitened
    kernel's grows with the components times D^2 (full) or D. Measured on CPU with
    ``benchmarks/bench_exact_kernels.py`` (one E-step on 16k rows): for full covariances the
    whitened kernel is 2-20x faster below about min(32, D / 2) components per data set and
    expanded64 up to 4x faster above; for diag and spherical the crossover is near D / 8
    components (whitened up to 3x faster below it at D = 64, expanded64 up to 3x above).

    Args:
        covariance_type: the type.
        n_components: components that share one data set's rows in one E-step (restarts times
            K for a bank, the active ones of a sweep), or None when unknown.
        d: number of features, or None when unknown.
    """
    if n_components is None or d is None:
        return True
    if covariance_type == "full":
        return n_components >= min(32, max(2, d // 2))
    return 8 * n_components >= d


def exact_kernel(covariance_type: str, n_components: int | None = None,
                 d: int | None = None) -> str:
    """Which exact kernel runs: on CPU ``"expanded64"`` for types with features where
    :func:`expanded_pays`, else ``"whitened"`` (decided when tracing; ``EXACT_KERNEL``
    overrides it).

    Inside the caller's own transforms the whitened kernel runs: the expanded64 kernel
    switches float64 on locally, which is only safe when gmm_jax owns the whole trace.

    Args:
        covariance_type: the type.
        n_components, d: the shape, as in :func:`expanded_pays` (None: expanded64 on CPU).
    """
    if EXACT_KERNEL != "auto":
        choice = EXACT_KERNEL
    elif in_user_transform():
        choice = "whitened"
    elif jax.default_backend() == "cpu" and expanded_pays(covariance_type, n_components, d):
        choice = "expanded64"
    else:
        choice = "whitened"
    if choice == "expanded64" and not has_features(covariance_type):
        return "whitened"
    return choice


#: Elements of the float64 feature block of one chunk of the expanded64 kernel: a block that
#: stays in cache runs several times faster on CPU than one that does not.
EXPANDED_CHUNK_ELEMENTS = 1 << 20


def expanded_chunk(chunk_size: int, covariance_type: str, d: int) -> int:
    """Rows per chunk of the expanded64 kernel: ``chunk_size``, or a power of two below it that
    keeps the (rows, F) float64 feature block (8 MiB) within ``EXPANDED_CHUNK_ELEMENTS``."""
    f = natural.n_features(covariance_type, d)
    size = max(256, EXPANDED_CHUNK_ELEMENTS // f)
    size = 1 << (size.bit_length() - 1)
    return min(chunk_size, size)


def expanded64_moments(params: GMMParams, Y: Array, w: Array, labels: Array | None,
                       assignment: str, chunk_size: int, cols=None):
    """Exact moments of all rows from the expanded form in float64 arithmetic (for the CPU).

    The features of the float32 rows are formed in float64 (products of two float32 numbers
    are exact there), the two GEMMs, the posterior and the sum over chunks run in float64, and
    the summed moments are re-centred on the current means and whitened with the current
    precision factors before they are rounded back to the data's dtype: the same statistics as
    :func:`bank_exact_moments`, at about twice the cost of the float32 fast form instead of the
    elementwise work of the residual form (which XLA's CPU backend runs far slower than GEMMs).

    Args:
        params: bank (leading axis R), means about the data's centre.
        Y: (N, D) centred rows; w: (N,) or (N, R) row weights (rows first, as chunked).
        labels: optional (N,) labels. assignment: "soft" or "hard".
        chunk_size: rows per chunk. cols: static active columns (see :func:`bank_moments`).

    Returns:
        (Nk (R, K), Fk (R, K, D), Sk, sum_ll (R,)) in ``Y``'s dtype.
    """
    ct = params.covariance_type
    r, k, d = params.means.shape
    out_dtype = Y.dtype
    with jax.enable_x64(True):
        f64 = jnp.float64
        p64 = jax.tree.map(lambda a: a.astype(f64), params)
        theta = bank_theta(p64, cols)  # once, not per chunk
        logw = _log_weights(p64)[:, :, None]
        per_model_w = w.ndim == 2

        def chunk(y, wc, lab):
            phi = natural.features(y.astype(f64), ct)
            lp = _unflat(jnp.dot(phi, theta, precision=HIGHEST).T, cols, r, k, -jnp.inf)
            wt = (wc.T if per_model_w else wc).astype(f64)
            wr, ll = _bank_posterior(lp + logw, wt, lab, assignment)
            M = jnp.dot(_flat(wr, cols), phi, precision=HIGHEST)  # (A, F)
            wb = jnp.broadcast_to(wt, ll.shape)
            return M, jnp.sum(wb * ll, axis=-1)

        M, sum_ll = sum_over_chunks(chunk, Y, w, expanded_chunk(chunk_size, ct, d), labels)
        # re-centred and whitened for the active components only (A of them, flat), then
        # scattered back into the (R, K) slots
        Nk, F0, S0 = natural.unpack_moments(M, ct, d)
        m = _flat(p64.means, cols)
        Fk = F0 - Nk[:, None] * m  # about the current means
        if ct == "full":
            pc = _flat(p64.precisions_cholesky, cols)  # (A, D, D)
            mf = m[:, :, None] * F0[:, None, :]
            S = S0 - mf - jnp.swapaxes(mf, -1, -2) + Nk[:, None, None] * (
                m[:, :, None] * m[:, None, :])
            Sk = mm(mm(jnp.swapaxes(pc, -1, -2), S), pc)  # whitened: L^T S L
        else:
            S = S0 - 2.0 * m * F0 + Nk[:, None] * m**2
            s = _flat(jax.vmap(lambda a: cov.expand_precision_cholesky(a, ct, k, d))(
                p64.precisions_cholesky), cols)
            Sk = S * s**2
        Nk, Fk, Sk = (_unflat(a, cols, r, k, 0.0) for a in (Nk, Fk, Sk))
        return jax.tree.map(lambda a: a.astype(out_dtype), (Nk, Fk, Sk, sum_ll))


def bank_theta(params: GMMParams, cols=None) -> Array:
    """(F, A) natural parameters of a bank side by side (one wide GEMM per E-step): all R K
    components, or the active ones listed in ``cols``."""
    if cols is not None and not cov.is_tied(params.covariance_type):
        # per-component parameters: the active ones as one model of A components
        flat = params._replace(**{name: _flat(getattr(params, name), cols) for name in (
            "weights", "means", "covariances", "precisions_cholesky")})
        return natural.natural_parameters(flat)
    theta = jax.vmap(natural.natural_parameters)(params)  # (R, F, K)
    return _flat(jnp.transpose(theta, (0, 2, 1)), cols).T


def bank_fast_moments(params: GMMParams, Y: Array, w: Array, labels: Array | None,
                      assignment: str, phi: Array | None = None, theta: Array | None = None,
                      cols=None):
    """Fast-form moments of one chunk for a bank, about zero.

    Returns ``(M (R, K, F), sum_ll (R,))`` for the natural-parameter types: the packed moments
    ``R^T phi``, which add over chunks, for :func:`unpack_bank_moments` once after the sum
    (unpacking in every chunk cost 1 s of a 3-iteration 8-restart fit at N=100k); for tied
    covariances ``(Nk, Fk, Sk, sum_ll)``.

    Args:
        params: bank of mixtures (means about the point the data are centred on).
        Y: (n, D) centred rows.
        w: (n,) or (R, n) weights.
        labels: optional (n,) labels (-1 unknown).
        assignment: "soft" or "hard".
        phi: (n, F) cached features of ``Y`` (built here when None).
        theta: (F, A) from :func:`bank_theta` (hoisted out of the chunk loop by callers).
        cols: static flat indices of the active components (None: all).
    """
    ct = params.covariance_type
    r, k, d = params.means.shape
    n = Y.shape[0]
    logw = _log_weights(params)  # (R, K)
    wb = jnp.broadcast_to(w, (r, n))
    if ct == "tied":
        L = params.precisions_cholesky  # (R, D, D)
        zy = jnp.dot(Y, jnp.transpose(L, (1, 0, 2)).reshape(d, r * d),
                     precision=HIGHEST).reshape(n, r, d)
        zm = jnp.einsum("rkd,rde->rke", params.means, L, precision=HIGHEST)
        cross = jnp.einsum("nre,rke->rkn", zy, zm, precision=HIGHEST)
        maha = (jnp.sum(zy**2, axis=-1).T[:, None, :] - 2.0 * cross
                + jnp.sum(zm**2, axis=-1)[:, :, None])
        log_det = jax.vmap(lambda a: cov.log_det_cholesky(a, ct, d))(L)  # (R,)
        lp = (logw + log_det[:, None] - 0.5 * d * _LOG_2PI)[:, :, None] \
            - 0.5 * jnp.maximum(maha, 0.0)
        wr, ll = _bank_posterior(lp, w, labels, assignment)
        Nk = jnp.sum(wr, axis=-1)
        Fk = jnp.dot(wr.reshape(r * k, n), Y, precision=HIGHEST).reshape(r, k, d)
        if w.ndim == 1:
            S = jnp.dot((Y * w[:, None]).T, Y, precision=HIGHEST)
            Sk = jnp.broadcast_to(S, (r, d, d))
        else:
            Sk = jnp.einsum("rn,nd,ne->rde", w, Y, Y, precision=HIGHEST)
        return Nk, Fk, Sk, jnp.sum(wb * ll, axis=-1)
    if phi is None:
        phi = natural.features(Y, ct)
    if theta is None:
        theta = bank_theta(params, cols).astype(Y.dtype)
    if cols is None and r == 1:  # one model: rows first (see _bank_posterior)
        lp = jnp.dot(phi, theta, precision=HIGHEST).reshape(n, r, k) + logw[None]
        wr, ll = _bank_posterior(lp, w, labels, assignment, rows_first=True)
        M = jax.lax.dot_general(wr.reshape(n, r * k), phi, (((0,), (0,)), ((), ())),
                                precision=HIGHEST).reshape(r, k, -1)
        sum_ll = jnp.sum(wb.T * ll, axis=0)
    else:
        lp = _unflat(jnp.dot(phi, theta, precision=HIGHEST).T, cols, r, k, -jnp.inf)
        lp = lp + logw[:, :, None]  # (R, K, n)
        wr, ll = _bank_posterior(lp, w, labels, assignment)
        M = _unflat(jnp.dot(_flat(wr, cols), phi, precision=HIGHEST), cols, r, k, 0.0)
        sum_ll = jnp.sum(wb * ll, axis=-1)
    return M, sum_ll


def unpack_bank_moments(M: Array, covariance_type: str, d: int) -> tuple[Array, Array, Array]:
    """(Nk, Fk, Sk) of a bank from its (R, K, F) packed fast-form moments ``R^T phi``."""
    return jax.vmap(lambda a: natural.unpack_moments(a, covariance_type, d))(M)


def wrap_stats(params: GMMParams, moments, form: str) -> tuple[SuffStats, Array]:
    """``SuffStats`` (shift (..., K, D), basis in the type's shape) and the weighted ll sum.

    Works for one model or a bank (leading axes on every leaf).
    """
    ct = params.covariance_type
    k, d = params.means.shape[-2:]
    Nk, Fk, Sk, sum_ll = moments
    if form == "exact":
        shift, basis = params.means, params.precisions_cholesky
    else:
        shift = jnp.zeros_like(params.means)
        basis = jnp.broadcast_to(cov.identity_basis(ct, k, d, params.means.dtype),
                                 params.precisions_cholesky.shape)
    return SuffStats(Nk, Fk, Sk, shift, ct, basis), sum_ll


def bank_moments(params: GMMParams, Y: Array, w: Array, labels: Array | None, *,
                 form: str, assignment: str, chunk_size: int, phi: Array | None = None,
                 cols=None):
    """Moments of all rows for a bank, summed over chunks of ``chunk_size`` rows (static).

    Args:
        params: bank (leading axis R on every leaf), means about the data's centre.
        Y: (N, D) centred rows (N a multiple of ``chunk_size``, or at most it).
        w: (N,) shared or (R, N) per-model row weights.
        labels: optional (N,) labels.
        form: ``"exact"`` or ``"fast"`` (static); ``"whitened"`` or ``"expanded64"`` pick an
            exact kernel explicitly.
        assignment: ``"soft"`` or ``"hard"`` (static).
        chunk_size: static chunk size.
        phi: optional (N, F) cached features of ``Y`` (fast form).
        cols: optional static tuple of the flat indices ``r * K + k`` of active components:
            the GEMMs run over those only (a sweep's masked slots cost nothing).

    Returns:
        (Nk (R, K), Fk (R, K, D), Sk, sum_ll (R,)).
    """
    wt = w.T if w.ndim == 2 else w  # rows first for chunking
    ct = params.covariance_type
    d = params.means.shape[-1]

    def unrow(x):
        return x.T if w.ndim == 2 else x

    if form == "exact":
        r, k = params.means.shape[:2]
        form = exact_kernel(ct, r * k if cols is None else len(cols), d)
    if form == "expanded64" and has_features(ct):
        return expanded64_moments(params, Y, wt, labels, assignment, chunk_size, cols)
    if form in ("whitened", "expanded64"):
        def fn(y, wc, lab):
            return bank_exact_moments(params, y, unrow(wc), lab, assignment, cols)
        return sum_over_chunks(fn, Y, wt, chunk_size, labels)
    packed = has_features(ct)  # natural-parameter moments: add packed, unpack once
    theta = bank_theta(params, cols).astype(Y.dtype) if packed else None  # once per E-step

    def fn_fast(y, wc, lab, ph):
        return bank_fast_moments(params, y, unrow(wc), lab, assignment, ph, theta, cols)
    out = sum_over_chunks(fn_fast, Y, wt, chunk_size, labels, phi)
    if not packed:
        return out
    M, sum_ll = out
    return unpack_bank_moments(M, ct, d) + (sum_ll,)


def chunked_moments(params: GMMParams, Y: Array, w: Array, labels: Array | None, *,
                    form: str, assignment: str, chunk_size: int, phi: Array | None = None):
    """:func:`bank_moments` for one model (no model axis)."""
    bank = jax.tree.map(lambda a: a[None], params)
    out = bank_moments(bank, Y, w, labels, form=form, assignment=assignment,
                       chunk_size=chunk_size, phi=phi)
    return jax.tree.map(lambda a: a[0], out)
