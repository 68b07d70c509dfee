"""Class-conditional GMM classifier: functional core and estimator."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import check_classifiers_classes, check_fit2d_predict1d

from gmm_jax import GMMClassifier
from gmm_jax.classifier import fit_classifier, joint_log_likelihood, predict_classes

RNG = np.random.default_rng(0)
# class 0 is bimodal: one Gaussian per class would fail, two components per class succeed
# equal class sizes: every per-class fit shares one compiled program
X = np.r_[RNG.normal([-6, 0], 0.7, (35, 2)), RNG.normal([6, 0], 0.7, (35, 2)),
          RNG.normal([0, 0], 0.7, (70, 2))]
Y = np.r_[np.zeros(70, int), np.ones(70, int)]


def test_functional_core():
    m = fit_classifier(0, X, Y, 2, covariance_type="diag")
    assert m.params.means.shape == (2, 2, 2) and m.class_log_prior.shape == (2,)
    np.testing.assert_allclose(np.exp(m.class_log_prior), [0.5, 0.5], rtol=1e-6)
    assert joint_log_likelihood(m, X).shape == (140, 2)
    assert np.mean(np.asarray(predict_classes(m, X)) == Y) > 0.98


def test_estimator_string_labels_proba_and_pickle():
    y = np.where(Y == 0, "outer", "inner")
    clf = GMMClassifier(2, covariance_type="diag", random_state=0).fit(X, y)
    assert list(clf.classes_) == ["inner", "outer"]
    assert clf.score(X, y) > 0.98
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-10)
    assert np.all(clf.predict(X) == clf.classes_[proba.argmax(1)])
    again = pickle.loads(pickle.dumps(clone(clf).fit(X, y)))
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))


def test_single_gaussian_fails_where_mixture_succeeds():
    one = GMMClassifier(1, covariance_type="diag", random_state=0).fit(X, Y)
    two = GMMClassifier(2, covariance_type="diag", random_state=0).fit(X, Y)
    assert two.score(X, Y) > one.score(X, Y)


def test_errors_and_priors():
    with pytest.raises(NotFittedError):
        GMMClassifier().predict(X)
    with pytest.raises(ValueError, match="class 1 has 1 samples"):
        GMMClassifier(2).fit(X[:3], [0, 0, 1])
    with pytest.raises(ValueError, match="priors"):
        GMMClassifier(1, covariance_type="diag", priors=[0.5, 0.2]).fit(X, Y)
    clf = GMMClassifier(1, covariance_type="diag", priors=[0.3, 0.7]).fit(X, Y)
    np.testing.assert_allclose(np.exp(clf.class_log_prior_), [0.3, 0.7])
    with pytest.raises(ValueError, match="Unknown label type"):
        GMMClassifier(1).fit(X, RNG.normal(size=140))


@pytest.mark.slow
def test_selected_sklearn_classifier_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_classifiers_classes("GMMClassifier", GMMClassifier(covariance_type="diag"))
        check_fit2d_predict1d("GMMClassifier", GMMClassifier(covariance_type="diag"))
