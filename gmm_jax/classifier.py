"""Class-conditional GMM classifier: one mixture per class, Bayes rule to predict.

``p(c | x) ∝ p(c) p(x | c)`` with ``p(x | c)`` a mixture fitted by EM on the samples of class c.
Every class may have its own number of components (``n_components={label: K}``); rows labelled
``-1`` form a "none-of-the-others" class (an open-set classifier): a mixture of its own, fitted on
background samples, whose label in predictions is -1.

All classes are fitted in **one compiled program**: the rows of each class are gathered into one
padded block (zero weights beyond the class's rows), the mixtures are masked to the largest K,
and the EM loop runs over classes (and restarts) side by side. The per-class parameters are
stacked along a leading class axis, so scoring is one ``vmap`` of the core's ``log_likelihood``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax import estep, validation
from gmm_jax._jit import as_array
from gmm_jax.covariance import check_covariance_type
from gmm_jax.density import log_likelihood
from gmm_jax.em import auto_chunk
from gmm_jax.fitting import FEATURE_CACHE_BYTES, bank_program, pad_groups, restart_keys
from gmm_jax.init import check_init
from gmm_jax.linalg import mm
from gmm_jax.selection import _best_restarts
from gmm_jax.types import GMMParams

__all__ = ["ClassifierParams", "fit_classifier", "fit_classifier_sweep", "joint_log_likelihood",
           "predict_classes"]

BACKGROUND = -1


class ClassifierParams(NamedTuple):
    """Fitted class-conditional mixtures.

    Attributes:
        params: ``GMMParams`` whose leaves have a leading class axis C (weights (C, K_max),
            means (C, K_max, D), ...); classes with fewer components have zero weights in the
            remaining slots.
        class_log_prior: (C,) ``log p(c)``.
        converged: (C,) whether each class's EM converged.
        labels: (C,) int label of each class (0..C-1 for known classes, -1 for the
            none-of-the-others class when there is one).
        n_components: (C,) int number of active components per class.
    """

    params: GMMParams
    class_log_prior: jax.Array
    converged: jax.Array
    labels: jax.Array | None = None
    n_components: jax.Array | None = None


def _component_counts(n_components, labels: list[int]) -> list[int]:
    if isinstance(n_components, dict):
        missing = [c for c in labels if c not in n_components]
        if missing:
            raise ValueError(f"n_components has no entry for class(es) {missing}; give one K per "
                             f"class (got keys {sorted(n_components)}).")
        extra = [c for c in n_components if c not in labels]
        if extra:
            raise ValueError(f"n_components names class(es) {extra} that do not occur in y.")
        return [validation.check_positive_int(n_components[c], f"n_components[{c}]")
                for c in labels]
    k = validation.check_positive_int(n_components, "n_components")
    return [k] * len(labels)


def fit_classifier(key, X, y, n_components, *, n_classes: int | None = None,
                   priors=None, sample_weight=None, covariance_type: str = "full",
                   max_iter: int = 100, tol: float = 1e-3, n_init: int = 1,
                   init: str = "kmeans", reg_covar: float = 1e-6, eigenvalue_floor=None,
                   method: str = "auto", max_components: int | None = None) -> ClassifierParams:
    """Fits one mixture to the samples of each class, all classes in one compiled program.

    Args:
        key: ``jax.random.key`` or int seed.
        X: (N, D) samples.
        y: (N,) integer class indices in ``[0, C)``, or -1 for background samples (a
            "none-of-the-others" class of its own). Every class needs at least K samples.
        n_components: K per class: an int, or a dict ``{label: K}`` (one entry per class,
            including -1 when present).
        n_classes: C, the number of known classes; default ``max(y) + 1``.
        priors: optional class priors: (C,) or (C + 1,) with the background last, or a dict
            ``{label: prior}``; default the (weighted) class frequencies.
        sample_weight: optional (N,) weights.
        covariance_type, max_iter, tol, n_init, init, reg_covar, eigenvalue_floor, method: as in
            :func:`gmm_jax.fit`, for every class.
        max_components: optional number of component slots per class (>= every K; default the
            largest K). Classifiers of different K under one ``max_components`` share one
            compiled program (a sweep over K compiles once), at the cost of computing the
            masked slots; the fit is the same as without it (the slots beyond a class's K have
            zero weight).

    Returns:
        ``ClassifierParams``.

    Example:
        >>> import jax, numpy as np
        >>> from gmm_jax.classifier import fit_classifier, predict_classes
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-3, 1, (50, 2)), rng.normal(3, 1, (50, 2))]
        >>> y = np.r_[np.zeros(50, int), np.ones(50, int)]
        >>> m = fit_classifier(jax.random.key(0), X, y, 1)
        >>> float(np.mean(np.asarray(predict_classes(m, X)) == y)) > 0.95
        True
    """
    return _fit_classifiers(
        key, X, y, [n_components], n_classes=n_classes, priors=priors,
        sample_weight=sample_weight, covariance_type=covariance_type, max_iter=max_iter, tol=tol,
        n_init=n_init, init=init, reg_covar=reg_covar, eigenvalue_floor=eigenvalue_floor,
        method=method, max_components=max_components, skip_masked=False)[0]


def fit_classifier_sweep(key, X, y, n_components_list, *, n_classes: int | None = None,
                         priors=None, sample_weight=None, covariance_type: str = "full",
                         max_iter: int = 100, tol: float = 1e-3, n_init: int = 1,
                         init: str = "kmeans", reg_covar: float = 1e-6, eigenvalue_floor=None,
                         method: str = "auto") -> list[ClassifierParams]:
    """One classifier per entry of ``n_components_list``, all in one compiled program.

    The classifiers of a sweep over K (every class, every K, every restart) run as one bank:
    one compile for the whole sweep, and each member's E-step works on its own K components
    only (the masked slots beyond it cost nothing). Entry i equals
    ``fit_classifier(key, X, y, n_components_list[i], ...)`` (the same keys; up to rounding,
    as the chunking may differ).

    Args:
        key, X, y, n_classes, priors, sample_weight, covariance_type, max_iter, tol, n_init,
            init, reg_covar, eigenvalue_floor, method: as in :func:`fit_classifier`.
        n_components_list: a non-empty list of K settings, each an int or a dict
            ``{label: K}`` as in :func:`fit_classifier`.

    Returns:
        a list of ``ClassifierParams``, one per entry, each with as many slots as its largest K.

    Example:
        >>> import numpy as np
        >>> from gmm_jax.classifier import fit_classifier_sweep, predict_classes
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-3, 1, (50, 2)), rng.normal(3, 1, (50, 2))]
        >>> y = np.r_[np.zeros(50, int), np.ones(50, int)]
        >>> models = fit_classifier_sweep(0, X, y, [1, 2])
        >>> [m.params.means.shape for m in models]
        [(2, 1, 2), (2, 2, 2)]
    """
    if isinstance(n_components_list, (int, np.integer, dict)) or len(n_components_list) == 0:
        raise ValueError("n_components_list must be a non-empty list of K settings (ints or "
                         f"dicts), got {n_components_list!r}; for one K use fit_classifier.")
    return _fit_classifiers(
        key, X, y, list(n_components_list), n_classes=n_classes, priors=priors,
        sample_weight=sample_weight, covariance_type=covariance_type, max_iter=max_iter, tol=tol,
        n_init=n_init, init=init, reg_covar=reg_covar, eigenvalue_floor=eigenvalue_floor,
        method=method, max_components=None, skip_masked=True)


def _fit_classifiers(key, X, y, settings: list, *, n_classes, priors, sample_weight,
                     covariance_type, max_iter, tol, n_init, init, reg_covar, eigenvalue_floor,
                     method, max_components, skip_masked: bool) -> list[ClassifierParams]:
    """Classifiers for a list of K settings as one bank: G classes x (settings x n_init)."""
    check_covariance_type(covariance_type)
    check_init(init)
    estep.check_method(method)
    key = validation.check_key(key)
    n_init = validation.check_positive_int(n_init, "n_init")
    max_iter, tol, reg_covar, eigenvalue_floor = validation.check_loop_options(
        max_iter, tol, reg_covar, eigenvalue_floor)
    X = validation.check_array(X)
    n, d = X.shape
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one label per row of X), got {y.shape}.")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be (N,) integer class indices (-1 for background), got dtype "
                         f"{y.dtype}.")
    if np.any(y < BACKGROUND):
        raise ValueError("y must hold class indices >= 0, or -1 for background samples.")
    known_max = int(y.max()) if np.any(y >= 0) else -1
    c = known_max + 1 if n_classes is None else validation.check_positive_int(n_classes,
                                                                             "n_classes")
    if known_max >= c:
        raise ValueError(f"y holds class {known_max}, but n_classes={c}.")
    has_bg = bool(np.any(y == BACKGROUND))
    labels = list(range(c)) + ([BACKGROUND] if has_bg else [])
    ks_list = [_component_counts(entry, labels) for entry in settings]  # per setting, class
    sw = validation.check_sample_weight(sample_weight, n, X.dtype)
    w = np.ones(n, X.dtype) if sw is None else np.asarray(sw, X.dtype)
    rows = [np.flatnonzero(y == lab) for lab in labels]
    for i, lab in enumerate(labels):
        k = max(ks[i] for ks in ks_list)
        name = "the background class (-1)" if lab == BACKGROUND else f"class {lab}"
        if rows[i].size < k:
            raise ValueError(f"{name} has {rows[i].size} samples, fewer than n_components={k}.")
        if np.sum(w[rows[i]] > 0) < k:
            raise ValueError(f"{name} has fewer than {k} samples with positive weight.")
    mass = np.array([w[r].astype(np.float64).sum() for r in rows])
    prior = _priors(priors, labels, mass)
    Xg, wg = pad_groups(X, w, rows)  # one padded block per class
    g, n_max = wg.shape
    k_max = max(max(ks) for ks in ks_list)
    if max_components is not None:
        k_max_given = validation.check_positive_int(max_components, "max_components")
        if k_max_given < k_max:
            raise ValueError(f"max_components={k_max_given} is below the largest n_components="
                             f"{k_max}; pass max_components >= every class's K.")
        k_max = k_max_given
    n_set = len(ks_list)
    m = n_set * n_init  # members per class: setting-major, then restarts
    # every setting uses the classifier's keys: class i's restarts come from fold_in(key, i)
    keys = jax.vmap(lambda i: restart_keys(jax.random.fold_in(key, i), n_init))(
        jnp.arange(g))
    keys = jnp.tile(keys, (1, n_set))  # (G, S * n_init)
    n_active = jnp.asarray([[ks[i] for ks in ks_list for _ in range(n_init)]
                            for i in range(g)], jnp.int32)
    # skip_masked: each member's E-step runs over its largest K only (a static layout, so one
    # program per list of settings); otherwise the program depends on the slot count alone
    active = tuple(max(ks) for ks in ks_list for _ in range(n_init)) if skip_masked else None
    dtype = X.dtype
    work = n_init * sum(max(ks) for ks in ks_list) if skip_masked else m * k_max
    out = bank_program(
        keys, as_array(Xg), as_array(wg), None, None, jnp.asarray(tol, dtype),
        jnp.asarray(reg_covar, dtype),
        None if eigenvalue_floor is None else jnp.asarray(eigenvalue_floor, dtype), n_active,
        n_components=k_max, covariance_type=covariance_type, max_iter=max_iter, init=init,
        loop="while", chunk_size=auto_chunk(n_max, k_max, d, m), assignment="soft",
        method=method, cache_bytes=FEATURE_CACHE_BYTES, active_counts=active,
        exact_kernel=estep.exact_kernel(covariance_type, work, d))
    # picking the best restarts on the host: op-by-op indexing would compile per shape
    lb = np.asarray(out["lower_bound"])
    best = _best_restarts(lb, n_set, n_init)  # (G, S)
    params_np = jax.tree.map(np.asarray, out["params"])
    converged = np.asarray(out["converged"])
    with np.errstate(divide="ignore"):
        log_prior = jnp.asarray(np.log(prior), dtype)
    models = []
    per_component = not cov.is_tied(covariance_type)
    for s_i, ks in enumerate(ks_list):
        j = s_i * n_init + best[:, s_i]  # (G,) member of each class
        k_s = k_max if max_components is not None or n_set == 1 else max(ks)

        def pick(a, trim, j=j, k_s=k_s):
            a = a[np.arange(g), j]
            return as_array(a[:, :k_s] if trim else a)

        p = params_np
        params = GMMParams(pick(p.weights, True), pick(p.means, True),
                           pick(p.covariances, per_component),
                           pick(p.precisions_cholesky, per_component), covariance_type)
        models.append(ClassifierParams(
            params=params,
            class_log_prior=log_prior,
            converged=as_array(converged[np.arange(g), j]),
            labels=jnp.asarray(labels, jnp.int32),
            n_components=jnp.asarray(ks, jnp.int32),
        ))
    return models


def _priors(priors, labels, mass) -> np.ndarray:
    if priors is None:
        return mass / mass.sum()
    if isinstance(priors, dict):
        if sorted(priors) != sorted(labels):
            raise ValueError(f"priors must have one entry per class {labels}, got keys "
                             f"{sorted(priors)}.")
        prior = np.array([float(priors[lab]) for lab in labels])
    else:
        prior = np.asarray(priors, np.float64)
    if prior.shape != (len(labels),) or np.any(prior < 0) or not np.isclose(prior.sum(), 1.0):
        raise ValueError(f"priors must be ({len(labels)},) non-negative and sum to 1 (one per "
                         f"class {labels}), got {prior}.")
    return prior


@jax.jit
def joint_log_likelihood(model: ClassifierParams, X) -> jax.Array:
    """(N, C) ``log p(x_n | c) + log p(c)``.

    Example:
        >>> import jax, numpy as np
        >>> from gmm_jax.classifier import fit_classifier, joint_log_likelihood
        >>> X = np.random.default_rng(0).normal(size=(40, 2)); y = np.arange(40) % 2
        >>> joint_log_likelihood(fit_classifier(0, X, y, 1), X).shape
        (40, 2)
    """

    def per_class(p):
        active = p.weights > 0
        shift = mm(p.weights, jnp.where(active[:, None], p.means, 0.0))
        return log_likelihood(p._replace(means=p.means - shift), X - shift)

    return jax.vmap(per_class, out_axes=1)(model.params) + model.class_log_prior[None, :]


@jax.jit
def predict_classes(model: ClassifierParams, X) -> jax.Array:
    """(N,) int32 label maximising ``log p(x | c) + log p(c)`` (-1: none of the others)."""
    idx = jnp.argmax(joint_log_likelihood(model, X), axis=1)
    if model.labels is None:
        return idx.astype(jnp.int32)
    return model.labels[idx]


def fit_classifier_lbg(X, y, max_components: int, *, covariance_type: str = "full",
                       split_scale: float = 0.1, eigenvalue_floor=None, reg_covar: float = 1e-6,
                       max_iter: int = 100, tol: float = 1e-6, priors=None,
                       method: str = "auto") -> list[ClassifierParams]:
    """One class-conditional classifier per LBG stage: K = 1, 2, 4, ..., ``max_components``
    components per class, every class and every stage in one compiled program.

    This is the seed's recipe for its per-class GMM table (LBG growth with an eigenvalue floor
    against degenerate components): the classifier of stage s is the one a separate LBG run to
    size K_s would give, without refitting the smaller sizes.

    Args:
        X: (N, D) samples. y: (N,) class indices in [0, C).
        max_components: the largest K (the last stage).
        covariance_type, split_scale, eigenvalue_floor, reg_covar, max_iter, tol, method: as in
            :func:`gmm_jax.fit_lbg`.
        priors: optional (C,) class priors (default the class frequencies).

    Returns:
        list of ``ClassifierParams``, one per size of ``gmm_jax.lbg.stage_sizes``.
    """
    from gmm_jax import lbg
    from gmm_jax.fitting import lbg_program

    k, max_iter, tol, reg_covar, split_scale, eigenvalue_floor = lbg.check_options(
        covariance_type, method, max_components, max_iter, tol, reg_covar, split_scale,
        eigenvalue_floor)
    X = validation.check_array(X)
    n, d = X.shape
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or np.any(y < 0):
        raise ValueError(f"y must be ({n},) class indices >= 0.")
    c = int(y.max()) + 1
    rows = [np.flatnonzero(y == cls) for cls in range(c)]
    for cls, r in enumerate(rows):
        if r.size < k:
            raise ValueError(f"class {cls} has {r.size} samples, fewer than max_components={k}.")
    prior = _priors(priors, list(range(c)), np.array([r.size for r in rows], np.float64))
    Xg, wg = pad_groups(X, np.ones(n, X.dtype), rows)
    n_max = wg.shape[1]
    dtype = X.dtype
    stages, shift = lbg_program(
        as_array(Xg), as_array(wg), jnp.asarray(tol, dtype), jnp.asarray(reg_covar, dtype),
        None if eigenvalue_floor is None else jnp.asarray(eigenvalue_floor, dtype),
        n_components=k, covariance_type=covariance_type, max_iter=max_iter,
        chunk_size=auto_chunk(n_max, k, d), method=method, split_scale=float(split_scale),
        exact_kernel=estep.exact_kernel(covariance_type, k, d))
    out = []
    log_prior = jnp.asarray(np.log(prior), dtype)
    # each stage taken apart on the host: op-by-op indexing would compile per stage and shape
    stages, shift = jax.tree.map(np.asarray, (stages, shift))
    for s, _ in enumerate(lbg.stage_sizes(k)):
        p = jax.tree.map(lambda a, s=s: a[s, :, 0], stages["params"])
        p = p._replace(means=np.where(p.weights[..., None] > 0, p.means + shift[:, None, :],
                                      p.means))
        out.append(ClassifierParams(jax.tree.map(as_array, p), log_prior,
                                    as_array(stages["converged"][s, :, 0]),
                                    jnp.arange(c, dtype=jnp.int32),
                                    jnp.asarray(np.sum(p.weights > 0, axis=1), jnp.int32)))
    return out
