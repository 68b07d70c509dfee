"""Class-conditional Gaussian mixture classifier: one mixture per class, Bayes rule to predict.

``p(c | x) ∝ p(c) p(x | c)`` with ``p(x | c)`` a K-component mixture fitted by EM on the samples
of class c. The per-class parameters are stacked along a leading class axis, so scoring is one
``vmap`` of the core's ``log_likelihood`` over classes inside one jitted program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import validation
from gmm_jax.density import log_likelihood
from gmm_jax.em import fit
from gmm_jax.types import GMMParams

__all__ = ["ClassifierParams", "fit_classifier", "joint_log_likelihood", "predict_classes"]


class ClassifierParams(NamedTuple):
    """Fitted class-conditional mixtures.

    Attributes:
        params: ``GMMParams`` whose leaves have a leading class axis C (weights (C, K), means
            (C, K, D), ...).
        class_log_prior: (C,) ``log p(c)``.
        converged: (C,) whether each class's EM converged.
    """

    params: GMMParams
    class_log_prior: jax.Array
    converged: jax.Array


def fit_classifier(key, X, y, n_components: int, *, n_classes: int | None = None,
                   priors=None, sample_weight=None, **fit_kwargs) -> ClassifierParams:
    """Fits one K-component mixture to the samples of each class.

    Args:
        key: ``jax.random.key`` or int seed.
        X: (N, D) samples.
        y: (N,) integer class indices in ``[0, C)``; every class needs >= 1 sample (and
            >= n_components samples).
        n_components: K, components per class.
        n_classes: C; default ``max(y) + 1``.
        priors: optional (C,) class priors; default the (weighted) class frequencies.
        sample_weight: optional (N,) weights.
        **fit_kwargs: passed to :func:`gmm_jax.fit` (covariance_type, max_iter, ...).

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
    key = validation.check_key(key)
    X = validation.check_array(X)
    n = X.shape[0]
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be (N,) = ({n},) integer class indices, got {y.dtype} "
                         f"{y.shape}.")
    if np.any(y < 0):
        raise ValueError("y must hold class indices >= 0.")
    c = int(y.max()) + 1 if n_classes is None else int(n_classes)
    sw = validation.check_sample_weight(sample_weight, n, X.dtype)
    w = np.ones(n, np.float64) if sw is None else sw.astype(np.float64)
    if priors is None:
        mass = np.array([w[y == cls].sum() for cls in range(c)])
        prior = mass / mass.sum()
    else:
        prior = np.asarray(priors, np.float64)
        if prior.shape != (c,) or np.any(prior < 0) or not np.isclose(prior.sum(), 1.0):
            raise ValueError(f"priors must be ({c},) non-negative and sum to 1, got {prior}.")
    counts = np.bincount(y, minlength=c)
    for cls in range(c):
        if counts[cls] < n_components:
            raise ValueError(f"class {cls} has {counts[cls]} samples, fewer than n_components="
                             f"{n_components}.")
    fits = []
    for cls in range(c):
        rows = np.flatnonzero(y == cls)
        fits.append(fit(jax.random.fold_in(key, cls), X[rows], n_components,
                        sample_weight=None if sw is None else sw[rows], **fit_kwargs))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[f.params for f in fits])
    with np.errstate(divide="ignore"):
        log_prior = np.log(prior)
    return ClassifierParams(
        params=stacked,
        class_log_prior=jnp.asarray(log_prior, X.dtype),
        converged=jnp.asarray([bool(f.converged) for f in fits]),
    )


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
        shift = p.weights @ p.means
        return log_likelihood(p._replace(means=p.means - shift), X - shift)

    return jax.vmap(per_class, out_axes=1)(model.params) + model.class_log_prior[None, :]


@jax.jit
def predict_classes(model: ClassifierParams, X) -> jax.Array:
    """(N,) int32 class index maximising ``log p(x | c) + log p(c)``."""
    return jnp.argmax(joint_log_likelihood(model, X), axis=1).astype(jnp.int32)
