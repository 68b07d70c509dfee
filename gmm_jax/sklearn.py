"""scikit-learn estimators over the functional core: ``GaussianMixture`` and ``GMMClassifier``.

The estimators are thin: ``fit`` validates on the host and calls :func:`gmm_jax.fit`; every other
method builds ``GMMParams`` from the fitted attributes and calls a module-level jitted function
of the core (nothing jitted closes over ``self``). Attributes are NumPy arrays with
scikit-learn's names, shapes and meanings, so fitted estimators pickle, clone and compare like
scikit-learn's.

Precision: scikit-learn computes in float64. To match it, float64 input (and int, bool, lists,
which scikit-learn converts to float64) is fitted and scored in float64 inside a local
``jax.enable_x64(True)`` context, whatever the global JAX setting; float32 input stays float32
(the fast path on accelerators). Every computation centres the data on the mixture mean first, so
float32 data far from the origin keep their precision.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings

import jax
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from gmm_jax import covariance as cov
from gmm_jax import io as gio
from gmm_jax import validation
from gmm_jax._jit import as_array
from gmm_jax.density import log_likelihood, log_prob_components
from gmm_jax.em import centre, default_shift
from gmm_jax.fitting import fit as core_fit
from gmm_jax.init import INIT_METHODS
from gmm_jax.sampling import sample as core_sample
from gmm_jax.types import GMMParams

__all__ = ["GMMClassifier", "GaussianMixture"]


# ----------------------------------------------------------------------------- jitted core calls
def _centred(params: GMMParams, X):
    shift = default_shift(params)
    return centre(params, shift), X - shift


@jax.jit
def _score_samples_program(params: GMMParams, X):
    p, Xc = _centred(params, X)
    return log_likelihood(p, Xc)


@jax.jit
def _log_resp_program(params: GMMParams, X):
    p, Xc = _centred(params, X)
    lp = log_prob_components(p, Xc)
    return lp - jax.nn.logsumexp(lp, axis=-1, keepdims=True)


def _finite_result(res) -> bool:
    leaves = jax.tree.leaves(res.params) + [res.log_likelihood]
    return bool(all(np.all(np.isfinite(np.asarray(a))) for a in leaves))


@contextlib.contextmanager
def _precision(dtype):
    """float64 computations need x64; enable it locally for them."""
    if np.dtype(dtype) == np.float64:
        with jax.enable_x64(True):
            yield
    else:
        yield


def _compute_dtype(X) -> np.dtype:
    """float32 stays float32; everything else (float64, ints, bools, objects) becomes float64."""
    dt = getattr(X, "dtype", None)
    if isinstance(dt, np.dtype) and np.issubdtype(dt, np.floating) and dt.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _check_params(est) -> None:
    validation.check_positive_int(est.n_components, "n_components")
    cov.check_covariance_type(est.covariance_type)
    validation.check_nonneg_float(est.tol, "tol")
    validation.check_nonneg_float(est.reg_covar, "reg_covar")
    validation.check_positive_int(est.max_iter, "max_iter")
    validation.check_positive_int(est.n_init, "n_init")
    if est.init_params not in INIT_METHODS:
        raise ValueError(f"init_params must be one of {INIT_METHODS}, got {est.init_params!r}.")
    if not isinstance(est.warm_start, (bool, np.bool_)):
        raise TypeError(f"warm_start must be a bool, got {est.warm_start!r}.")
    if getattr(est, "eigenvalue_floor", None) is not None:
        validation.check_nonneg_float(est.eigenvalue_floor, "eigenvalue_floor")


# ----------------------------------------------------------------------------- GaussianMixture
class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by compiled EM; a drop-in for ``sklearn.mixture.GaussianMixture``.

    Same parameters, methods and fitted attributes as scikit-learn's estimator, same shapes for
    the four covariance types. Restarts (``n_init``) run in parallel under ``vmap``. Differences:
    ``fit`` accepts ``sample_weight``; ``init_params`` also accepts ``"lbg"``; ``max_iter`` must be
    >= 1; with ``warm_start`` the first EM step of a refit is compared with ``-inf`` rather than
    the previous ``lower_bound_`` (so a refit runs at least two iterations); collapsed components
    are re-seeded inside EM instead of raising. float64 input is computed in float64 (see the
    module docstring).

    Args:
        n_components: number of mixture components K.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``, ``"tied_diag"`` or
            ``"tied_spherical"``.
        tol: stop when the mean log-likelihood changes by less than this.
        reg_covar: non-negative value added to covariance diagonals.
        max_iter: maximum EM iterations per initialisation.
        n_init: number of initialisations; the best lower bound is kept.
        init_params: ``"kmeans"``, ``"k-means++"``, ``"random"``, ``"random_from_data"`` or
            ``"lbg"``.
        weights_init: optional (K,) initial weights.
        means_init: optional (K, D) initial means.
        precisions_init: optional initial precisions (shape by covariance type).
        random_state: None, int, ``np.random.Generator``/``RandomState`` or a JAX key.
        warm_start: reuse the previous solution as the initialisation of the next ``fit``.
        verbose: print a one-line summary after each fit when > 0.
        eigenvalue_floor: optional floor on every covariance eigenvalue (see :func:`gmm_jax.fit`).

    Attributes:
        weights_: (K,). means_: (K, D). covariances_, precisions_, precisions_cholesky_: shape by
        type ((K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical). converged_: bool.
        n_iter_: int. lower_bound_: float, mean log-likelihood at the last E-step.
        lower_bounds_: list of the per-iteration lower bounds. n_features_in_: int.
        n_repaired_: number of collapsed components re-seeded during the fit.

    Example:
        >>> import numpy as np
        >>> from gmm_jax import GaussianMixture
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-3, 1, (100, 2)), rng.normal(3, 1, (100, 2))]
        >>> gm = GaussianMixture(2, random_state=0).fit(X)
        >>> gm.means_.shape, gm.predict(X[:3]).shape
        ((2, 2), (3,))
    """

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", weights_init=None,
                 means_init=None, precisions_init=None, random_state=None, warm_start=False,
                 verbose=0, eigenvalue_floor=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.eigenvalue_floor = eigenvalue_floor

    # -- input handling ---------------------------------------------------------------------
    def _validate_X(self, X, *, reset: bool, min_samples: int = 1):
        if reset:
            dtype = _compute_dtype(X)
        else:
            dtype = np.dtype(self.means_.dtype)
        arr = validation.check_array(X, min_samples=min_samples, dtype=dtype)
        # n_features_in_ / feature_names_in_ bookkeeping and scikit-learn's mismatch message.
        validate_data(self, X, reset=reset, skip_check_array=True)
        return arr

    def _params(self) -> GMMParams:
        """The fitted parameters as a ``GMMParams`` pytree (call inside ``_precision``)."""
        check_is_fitted(self)
        return GMMParams(
            weights=as_array(self.weights_), means=as_array(self.means_),
            covariances=as_array(self.covariances_),
            precisions_cholesky=as_array(self.precisions_cholesky_),
            covariance_type=self.covariance_type,
        )

    @property
    def params_(self) -> GMMParams:
        """Fitted parameters as ``gmm_jax.GMMParams`` (for the functional API)."""
        with _precision(self.means_.dtype):
            return self._params()

    def _set_from_params(self, params: GMMParams) -> None:
        ct = params.covariance_type
        self.weights_ = np.asarray(params.weights)
        self.means_ = np.asarray(params.means)
        self.covariances_ = np.asarray(params.covariances)
        self.precisions_cholesky_ = np.asarray(params.precisions_cholesky)
        self.precisions_ = np.asarray(cov.precisions_from_cholesky(params.precisions_cholesky, ct))

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Estimates the parameters with EM.

        Args:
            X: (N, D) array-like.
            y: ignored.
            sample_weight: optional (N,) non-negative weights.

        Returns:
            self.
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fits, then returns the (N,) component labels of ``X`` (as ``fit(X).predict(X)``)."""
        Xa = self._fit(X, sample_weight)
        with _precision(self.means_.dtype):
            lr = np.asarray(_log_resp_program(self._params(), as_array(Xa)))
        return np.argmax(lr, axis=1)

    def _fit(self, X, sample_weight):
        _check_params(self)
        fitted = hasattr(self, "converged_")
        do_init = not (self.warm_start and fitted)
        if not do_init:
            Xa = self._validate_X(X, reset=False, min_samples=self.n_components)
        else:
            Xa = self._validate_X(X, reset=True, min_samples=self.n_components)
        dtype = Xa.dtype
        if do_init:
            n_init = self.n_init
            w0, m0, p0 = self.weights_init, self.means_init, self.precisions_init
        else:
            if self.means_.shape[0] != self.n_components:
                raise ValueError(
                    "warm_start=True cannot change n_components from "
                    f"{self.means_.shape[0]} to {self.n_components}; refit with warm_start=False."
                )
            n_init = 1
            w0, m0, p0 = self.weights_, self.means_, self.precisions_
        key = validation.key_from_random_state(self.random_state)
        fit_kwargs = dict(
            covariance_type=self.covariance_type, max_iter=self.max_iter, tol=self.tol,
            n_init=n_init, init=self.init_params, reg_covar=self.reg_covar, weights_init=w0,
            means_init=m0, precisions_init=p0, sample_weight=sample_weight,
            eigenvalue_floor=self.eigenvalue_floor,
        )
        with _precision(dtype):
            res = core_fit(key, Xa, self.n_components, **fit_kwargs)
            finite = _finite_result(res)
        if not finite and dtype == np.float32:
            # float32 rounding can make a rank-deficient covariance indefinite (more features
            # than samples); float64 resolves it, so refit there rather than return NaN.
            warnings.warn("float32 EM met a covariance that is not positive definite in float32 "
                          "arithmetic; refitted in float64 (attributes are float64).",
                          RuntimeWarning, stacklevel=3)
            dtype = np.dtype(np.float64)
            Xa = Xa.astype(np.float64)
            with _precision(dtype):
                res = core_fit(key, Xa, self.n_components, **fit_kwargs)
                finite = _finite_result(res)
        if not finite:
            raise ValueError(
                "Fitting the mixture model failed because some components have ill-defined "
                "empirical covariance (non-finite parameters). Try to decrease the number of "
                "components, increase reg_covar, or scale the input data."
            )
        with _precision(dtype):
            self._set_from_params(res.params)
            n_iter = int(res.n_iter)
            self.converged_ = bool(res.converged)
            self.n_iter_ = n_iter
            self.lower_bound_ = float(res.log_likelihood)
            self.lower_bounds_ = [float(v) for v in np.asarray(res.history)[:n_iter]]
            self.n_repaired_ = int(res.n_repaired)
        if self.verbose:
            print(f"GaussianMixture: n_iter={n_iter} lower_bound={self.lower_bound_:.6g} "
                  f"converged={self.converged_} repaired={self.n_repaired_}")
        if not self.converged_:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning, stacklevel=3,
            )
        return Xa

    # -- inference ----------------------------------------------------------------------------
    def score_samples(self, X):
        """(N,) log-density ``log p(x_n)`` of each sample."""
        check_is_fitted(self)
        Xa = self._validate_X(X, reset=False)
        with _precision(self.means_.dtype):
            return np.asarray(_score_samples_program(self._params(), as_array(Xa)))

    def score(self, X, y=None):
        """Mean per-sample log-likelihood of ``X``."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X):
        """(N, K) posterior probability of each component."""
        check_is_fitted(self)
        Xa = self._validate_X(X, reset=False)
        with _precision(self.means_.dtype):
            lr = np.asarray(_log_resp_program(self._params(), as_array(Xa)))
        return np.exp(lr)

    def predict(self, X):
        """(N,) index of the most probable component of each sample."""
        check_is_fitted(self)
        Xa = self._validate_X(X, reset=False)
        with _precision(self.means_.dtype):
            lr = np.asarray(_log_resp_program(self._params(), as_array(Xa)))
        return np.argmax(lr, axis=1)

    def sample(self, n_samples=1):
        """Draws samples; like scikit-learn, they come grouped by component.

        Args:
            n_samples: number of samples (>= 1).

        Returns:
            (X, y): X (n_samples, D) and y (n_samples,) component labels, sorted by label.
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) \
                or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least "
                "one sample."
            )
        key = validation.key_from_random_state(self.random_state)
        with _precision(self.means_.dtype):
            X, y = core_sample(key, self._params(), int(n_samples))
            X, y = np.asarray(X), np.asarray(y)
        order = np.argsort(y, kind="stable")
        return X[order], y[order].astype(np.int64)

    def _n_parameters(self) -> int:
        _, d = self.means_.shape
        return cov.n_parameters(self.covariance_type, self.n_components, d)

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better)."""
        from gmm_jax.selection import bic

        check_is_fitted(self)
        Xa = self._validate_X(X, reset=False)
        with _precision(self.means_.dtype):
            return bic(self._params(), Xa)

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better)."""
        from gmm_jax.selection import aic

        check_is_fitted(self)
        Xa = self._validate_X(X, reset=False)
        with _precision(self.means_.dtype):
            return aic(self._params(), Xa)

    # -- persistence --------------------------------------------------------------------------
    _FIT_ATTRS = ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_",
                  "n_repaired_")

    def save(self, path) -> None:
        """Saves the fitted estimator (parameters, hyper-parameters, fit info) as .npz, no pickle.

        Example:
            >>> import numpy as np, tempfile, os
            >>> from gmm_jax import GaussianMixture
            >>> X = np.random.default_rng(0).normal(size=(50, 2))
            >>> gm = GaussianMixture(2, random_state=0).fit(X)
            >>> path = os.path.join(tempfile.mkdtemp(), "gm.npz")
            >>> gm.save(path)
            >>> np.allclose(GaussianMixture.load(path).score_samples(X), gm.score_samples(X))
            True
        """
        check_is_fitted(self)
        hyper = {}
        for name, value in self.get_params(deep=False).items():
            if isinstance(value, np.ndarray) or (value is not None and not isinstance(
                    value, (bool, int, float, str, np.integer, np.floating))):
                value = None if name == "random_state" else np.asarray(value).tolist()
            elif isinstance(value, np.generic):
                value = value.item()
            hyper[name] = value
        info = {a: getattr(self, a) for a in self._FIT_ATTRS if hasattr(self, a)}
        extra = {"estimator": "GaussianMixture", "hyper": hyper, "fit": info}
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in"] = [str(n) for n in self.feature_names_in_]
        with _precision(self.means_.dtype):
            gio.save(path, self._params(), metadata=extra)

    @classmethod
    def load(cls, path) -> GaussianMixture:
        """Loads an estimator written by :meth:`save` (or builds one from a params file)."""
        params, meta = gio.load(path, return_metadata=True)
        hyper = dict(meta.get("hyper", {}))
        hyper.setdefault("n_components", int(params.means.shape[0]))
        hyper["covariance_type"] = params.covariance_type
        est = cls(**{k: v for k, v in hyper.items() if k in cls._get_param_names()})
        est._set_from_params(params)
        fit_info = meta.get("fit", {})
        est.converged_ = bool(fit_info.get("converged_", True))
        est.n_iter_ = int(fit_info.get("n_iter_", 0))
        est.lower_bound_ = float(fit_info.get("lower_bound_", np.nan))
        est.lower_bounds_ = list(fit_info.get("lower_bounds_", []))
        est.n_features_in_ = int(params.means.shape[1])
        est.n_repaired_ = int(fit_info.get("n_repaired_", 0))
        if "feature_names_in" in meta:
            est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        return est


# ----------------------------------------------------------------------------- GMMClassifier
class GMMClassifier(ClassifierMixin, BaseEstimator):
    """Class-conditional Gaussian mixture classifier, with per-class K and an open-set class.

    Fits one mixture per class (``gmm_jax.classifier.fit_classifier``, all classes in one
    compiled program) and predicts ``argmax_c log p(x | c) + log p(c)``. For numeric labels,
    ``y = -1`` marks background samples of a "none-of-the-others" class: a mixture of its own,
    predicted as -1 (and listed in ``classes_``).

    Args:
        n_components: components per class: an int, or a dict ``{label: K}`` with one entry per
            class (including -1 when there are background samples).
        covariance_type, tol, reg_covar, max_iter, n_init, init_params, random_state,
            eigenvalue_floor: as in :class:`GaussianMixture`, used for every class.
        priors: optional class priors, aligned with ``classes_`` (an array) or a dict
            ``{label: prior}``; default the class frequencies.
        max_components: optional number of component slots per class (>= every K): classifiers
            of different ``n_components`` with the same ``max_components`` share one compiled
            program (for a sweep over K), with the same fit.

    Attributes:
        classes_: (C,) class labels (sorted; -1 first when there are background samples).
        class_log_prior_: (C,). weights_ (C, K_max) (K_max: the largest K, or max_components),
        means_ (C, K_max, D), covariances_,
        precisions_cholesky_ (leading axis C, then the per-class shapes; classes with fewer
        components have zero weights in the remaining slots). n_components_ (C,) int.
        converged_ (C,) bool. n_features_in_. background_offset_: the log-score added to the
        background class (0 unless :meth:`calibrate` chose one).

    Example:
        >>> import numpy as np
        >>> from gmm_jax import GMMClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-3, 1, (60, 2)), rng.normal(3, 1, (60, 2))]
        >>> y = np.r_[np.zeros(60), np.ones(60)]
        >>> clf = GMMClassifier(2, random_state=0).fit(X, y)
        >>> float(clf.score(X, y)) > 0.95
        True
    """

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", random_state=None, priors=None,
                 eigenvalue_floor=None, max_components=None):
        self.n_components = n_components
        self.max_components = max_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.priors = priors
        self.eigenvalue_floor = eigenvalue_floor

    def fit(self, X, y, sample_weight=None):
        """Fits one mixture per class.

        Args:
            X: (N, D) array-like. y: (N,) class labels (-1: background, numeric labels only).
            sample_weight: optional (N,).

        Returns:
            self.
        """
        from sklearn.utils.multiclass import check_classification_targets

        from gmm_jax import classifier as clf_core

        view = _ClassifierParamView(self)
        _check_params(view)
        dtype = _compute_dtype(X)
        Xa = validation.check_array(X, dtype=dtype)
        validate_data(self, X, reset=True, skip_check_array=True)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected.",
                          __import__("sklearn").exceptions.DataConversionWarning, stacklevel=2)
            y = y.ravel()
        if y.ndim != 1 or y.shape[0] != Xa.shape[0]:
            raise ValueError(f"y must have shape ({Xa.shape[0]},), got {y.shape}.")
        check_classification_targets(y)
        numeric = np.issubdtype(y.dtype, np.number)
        background = numeric & (y == -1)
        known = np.unique(y[~background])
        if known.size == 0:
            raise ValueError("y has no labelled class besides the background (-1) class.")
        y_idx = np.full(y.shape, -1, np.int64)
        y_idx[~background] = np.searchsorted(known, y[~background])
        has_bg = bool(np.any(background))
        self.classes_ = np.concatenate([np.asarray([-1], dtype=known.dtype), known]) \
            if has_bg else known
        labels = list(range(known.size)) + ([-1] if has_bg else [])
        n_components = self.n_components
        if isinstance(n_components, dict):
            def index(lab):
                if has_bg and numeric and lab == -1:
                    return -1
                pos = np.flatnonzero(known == lab)
                if pos.size == 0:
                    raise ValueError(f"n_components names class {lab!r}, which is not in y.")
                return int(pos[0])
            n_components = {index(lab): k for lab, k in n_components.items()}
        priors = self.priors
        if priors is not None:
            if isinstance(priors, dict):
                priors = {(-1 if (has_bg and numeric and lab == -1) else
                           int(np.flatnonzero(known == lab)[0]) if np.any(known == lab) else lab):
                          v for lab, v in priors.items()}
            else:
                pr = np.asarray(priors, np.float64)
                if pr.shape != (len(self.classes_),):
                    raise ValueError(f"priors must have one entry per class {list(self.classes_)}"
                                     f", got shape {pr.shape}.")
                priors = dict(zip([-1] + labels[:-1] if has_bg else labels, pr, strict=True))
        key = validation.key_from_random_state(self.random_state)
        with _precision(dtype):
            model = clf_core.fit_classifier(
                key, Xa, y_idx, n_components, n_classes=known.size,
                covariance_type=self.covariance_type, max_iter=self.max_iter, tol=self.tol,
                n_init=self.n_init, init=self.init_params, reg_covar=self.reg_covar,
                sample_weight=sample_weight, priors=priors,
                eigenvalue_floor=self.eigenvalue_floor, max_components=self.max_components,
            )
            # the core orders classes 0..C-1 then -1; classes_ puts -1 first
            order = np.r_[len(labels) - 1, np.arange(len(labels) - 1)] if has_bg else \
                np.arange(len(labels))
            p = jax.tree.map(lambda a: np.asarray(a)[order], model.params)
            self.weights_ = p.weights
            self.means_ = p.means
            self.covariances_ = p.covariances
            self.precisions_cholesky_ = p.precisions_cholesky
            self.class_log_prior_ = np.asarray(model.class_log_prior)[order]
            self.converged_ = np.asarray(model.converged)[order]
            self.n_components_ = np.asarray(model.n_components)[order]
        self.background_offset_ = 0.0
        if not np.all(self.converged_):
            warnings.warn("The mixture of at least one class did not converge; increase max_iter "
                          "or tol.", ConvergenceWarning, stacklevel=2)
        return self

    def _model(self):
        from gmm_jax.classifier import ClassifierParams

        check_is_fitted(self)
        log_prior = np.array(self.class_log_prior_, dtype=self.means_.dtype)
        if self._has_background():
            log_prior[0] += self.background_offset_
        return ClassifierParams(
            params=GMMParams(as_array(self.weights_), as_array(self.means_),
                             as_array(self.covariances_),
                             as_array(self.precisions_cholesky_), self.covariance_type),
            class_log_prior=as_array(log_prior),
            converged=as_array(self.converged_),
        )

    def _has_background(self) -> bool:
        c = self.classes_
        return bool(np.issubdtype(c.dtype, np.number) and c.size and c[0] == -1)

    def _joint(self, X):
        from gmm_jax.classifier import joint_log_likelihood

        check_is_fitted(self)
        Xa = validation.check_array(X, dtype=np.dtype(self.means_.dtype))
        validate_data(self, X, reset=False, skip_check_array=True)
        with _precision(self.means_.dtype):
            return np.asarray(joint_log_likelihood(self._model(), as_array(Xa)))

    def predict_log_proba(self, X):
        """(N, C) ``log p(c | x)``, columns aligned with ``classes_``."""
        j = self._joint(X)
        m = np.max(j, axis=1, keepdims=True)
        return j - (m + np.log(np.sum(np.exp(j - m), axis=1, keepdims=True)))

    def predict_proba(self, X):
        """(N, C) ``p(c | x)``."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """(N,) most probable class of each sample (-1: none of the others)."""
        joint = self._joint(X)
        return self.classes_[np.argmax(joint, axis=1)]

    def novelty_score(self, X):
        """(N,) open-set score: background log-score minus the best known class's (higher: more
        likely none of the others). Needs background samples in training."""
        if not self._has_background():
            raise ValueError("novelty_score needs a background (-1) class; fit with rows "
                             "labelled -1.")
        j = self._joint(X)
        return j[:, 0] - np.max(j[:, 1:], axis=1)

    def calibrate(self, X_val, y_val, *, offsets=None):
        """Chooses the background class's score offset on held-out data.

        Sweeps an offset added to the background class's log-score and keeps the one that
        maximises the balanced open-set accuracy: the mean of the accuracy on rows of known
        classes and the rejection rate of rows labelled -1 (classes unseen in training should be
        labelled -1 in ``y_val``).

        Args:
            X_val: (N, D) held-out rows. y_val: (N,) their labels, -1 for unknown classes.
            offsets: candidate offsets (default: a grid over the observed novelty scores).

        Returns:
            self (with ``background_offset_`` set).
        """
        if not self._has_background():
            raise ValueError("calibrate needs a background (-1) class; fit with rows labelled "
                             "-1.")
        y_val = np.asarray(y_val)
        unknown = y_val == -1
        if not np.any(unknown) or np.all(unknown):
            raise ValueError("calibrate needs held-out rows of known classes and rows labelled "
                             "-1.")
        saved = self.background_offset_
        self.background_offset_ = 0.0
        j = self._joint(X_val)
        self.background_offset_ = saved
        best_known = self.classes_[1:][np.argmax(j[:, 1:], axis=1)]
        gap = np.max(j[:, 1:], axis=1) - j[:, 0]  # offset above which a row is rejected
        if offsets is None:
            offsets = np.unique(np.concatenate([[0.0], np.quantile(gap, np.linspace(0, 1, 201))]))
        best, best_score = 0.0, -np.inf
        for off in np.asarray(offsets, np.float64):
            reject = gap < off
            acc_known = np.mean(~reject[~unknown] & (best_known[~unknown] == y_val[~unknown]))
            rej_unknown = np.mean(reject[unknown])
            score = 0.5 * (acc_known + rej_unknown)
            if score > best_score:
                best, best_score = float(off), score
        self.background_offset_ = best
        return self


class _ClassifierParamView:
    """Adapts GMMClassifier's parameters to ``_check_params``."""

    def __init__(self, est):
        n = est.n_components
        self.n_components = max(n.values()) if isinstance(n, dict) and n else n
        self.covariance_type = est.covariance_type
        self.tol = est.tol
        self.reg_covar = est.reg_covar
        self.max_iter = est.max_iter
        self.n_init = est.n_init
        self.init_params = est.init_params
        self.warm_start = False
        self.eigenvalue_floor = est.eigenvalue_floor
