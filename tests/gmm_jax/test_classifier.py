"""Class-conditional GMM classifier: functional core and estimator, one program for all
classes, per-class K, the open-set (-1) class and its calibration, class priors."""

import pickle
import warnings

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import check_classifiers_classes, check_fit2d_predict1d

import gmm_jax
from gmm_jax import GMMClassifier, fitting
from gmm_jax.classifier import (
    fit_classifier,
    fit_classifier_lbg,
    fit_classifier_sweep,
    joint_log_likelihood,
    predict_classes,
)

RNG = np.random.default_rng(0)
# class 0 is bimodal: one Gaussian per class would fail, two components per class succeed
X = np.r_[RNG.normal([-6, 0], 0.7, (35, 2)), RNG.normal([6, 0], 0.7, (35, 2)),
          RNG.normal([0, 0], 0.7, (70, 2))]
Y = np.r_[np.zeros(70, int), np.ones(70, int)]


def test_functional_core_fits_every_class_in_one_program():
    before = fitting.bank_program._cache_size()
    m = fit_classifier(0, X, Y, 2, covariance_type="diag")
    assert fitting.bank_program._cache_size() - before <= 1
    assert m.params.means.shape == (2, 2, 2) and m.class_log_prior.shape == (2,)
    np.testing.assert_allclose(np.exp(m.class_log_prior), [0.5, 0.5], rtol=1e-6)
    assert joint_log_likelihood(m, X).shape == (140, 2)
    assert np.mean(np.asarray(predict_classes(m, X)) == Y) > 0.98


def test_each_class_equals_a_fit_on_its_rows(x64):
    """Class c's mixture is gmm_jax.fit(fold_in(key, c), X[y == c], K) (one bank, padded
    classes, centred per class)."""
    key = jax.random.key(3)
    m = fit_classifier(key, X, Y, {0: 2, 1: 1}, covariance_type="full")
    for c, k in ((0, 2), (1, 1)):
        alone = gmm_jax.fit(jax.random.fold_in(key, c), X[Y == c], k, covariance_type="full",
                            max_components=2)
        np.testing.assert_allclose(m.params.means[c], alone.params.means, rtol=1e-9,
                                   atol=1e-10)
        np.testing.assert_allclose(m.params.weights[c], alone.params.weights, rtol=1e-9,
                                   atol=1e-12)
    np.testing.assert_array_equal(m.n_components, [2, 1])
    assert float(m.params.weights[1, 1]) == 0.0  # class 1's second slot is masked


def test_max_components_shares_one_program_across_k_and_fits_the_same(x64):
    """Classifiers of K = 1 and 2 (and per-class K) under max_components=4 run one compiled
    program, and each equals the classifier fitted without the spare slots (same key)."""
    key = jax.random.key(5)
    kss = (1, {0: 2, 1: 1}, 2)
    padded_fits, programs = [], []
    for ks in kss:
        padded_fits.append(fit_classifier(key, X, Y, ks, max_components=4))
        programs.append(fitting.bank_program._cache_size())
    assert programs[0] == programs[1] == programs[2], programs  # compiled for K=1 only
    for ks, padded in zip(kss, padded_fits, strict=True):
        plain = fit_classifier(key, X, Y, ks)
        assert padded.params.means.shape == (2, 4, 2)
        for c in (0, 1):
            k = ks if isinstance(ks, int) else ks[c]
            np.testing.assert_array_equal(padded.params.weights[c, k:], 0.0)
            np.testing.assert_allclose(padded.params.weights[c, :k], plain.params.weights[c, :k],
                                       rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(padded.params.means[c, :k], plain.params.means[c, :k],
                                       rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(padded.params.covariances[c, :k],
                                       plain.params.covariances[c, :k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(joint_log_likelihood(padded, X), joint_log_likelihood(plain, X),
                                   rtol=1e-10)
    clf = GMMClassifier(1, max_components=4, random_state=0).fit(X, Y)
    assert clf.means_.shape == (2, 4, 2) and clone(clf).get_params()["max_components"] == 4
    with pytest.raises(ValueError, match="max_components=1 is below the largest n_components=2"):
        fit_classifier(key, X, Y, 2, max_components=1)


def test_sweep_fits_every_setting_in_one_program_and_each_equals_its_own_classifier(x64):
    """fit_classifier_sweep over K = 1, per-class {2, 1} and 3 (two restarts each): one compile,
    every class of every entry is gmm_jax.fit on the class's rows (the best of the same two
    restarts), and the per-class entry equals fit_classifier's classifier."""
    key = jax.random.key(7)
    settings = [1, {0: 2, 1: 1}, 3]
    before = fitting.bank_program._cache_size()
    models = fit_classifier_sweep(key, X, Y, settings, n_init=2)
    assert fitting.bank_program._cache_size() - before == 1
    restarts_differ = False
    for ks, m in zip(settings, models, strict=True):
        if isinstance(ks, dict):  # one of them against fit_classifier (each is a compile)
            alone = fit_classifier(key, X, Y, ks, n_init=2)
            assert m.params.means.shape == alone.params.means.shape
            np.testing.assert_array_equal(m.n_components, alone.n_components)
            for a, b in zip(jax.tree.leaves(m.params), jax.tree.leaves(alone.params),
                            strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
            np.testing.assert_array_equal(m.converged, alone.converged)
            np.testing.assert_allclose(joint_log_likelihood(m, X),
                                       joint_log_likelihood(alone, X), rtol=1e-10)
        # each class is gmm_jax.fit on its rows, best of the same two restarts
        k_slots = m.params.weights.shape[1]
        for c in (0, 1):
            k = ks if isinstance(ks, int) else ks[c]
            ref = gmm_jax.fit(jax.random.fold_in(key, c), X[Y == c], k, n_init=2,
                              max_components=k_slots)
            def rows(a):  # the same components may come in another order
                a = np.asarray(a)
                return a[np.lexsort(a.T[::-1])]

            np.testing.assert_allclose(rows(m.params.means[c, :k]), rows(ref.params.means[:k]),
                                       rtol=1e-9, atol=1e-10)
            lbs = np.asarray(ref.restart_log_likelihoods)
            restarts_differ |= bool(abs(lbs[0] - lbs[1]) > 1e-3)
    assert restarts_differ  # so the choice of the best restart is checked
    with pytest.raises(ValueError, match="non-empty list"):
        fit_classifier_sweep(key, X, Y, 2)


def test_lbg_classifier_stages_equal_per_class_lbg_runs(x64):
    """Every stage of the one-program LBG classifier is the stage a separate fit_lbg on the
    class's rows gives (the seed's per-class table recipe), and one program serves all."""
    before = fitting.lbg_program._cache_size()
    stages = fit_classifier_lbg(X, Y, 2, covariance_type="full", eigenvalue_floor=1e-3,
                                split_scale=0.5)
    assert fitting.lbg_program._cache_size() - before <= 1
    assert [s.params.means.shape for s in stages] == [(2, 2, 2), (2, 2, 2)]
    np.testing.assert_array_equal(stages[0].n_components, [1, 1])
    np.testing.assert_array_equal(stages[1].n_components, [2, 2])
    for c in (0, 1):
        alone = gmm_jax.fit_lbg(0, X[Y == c], 2, covariance_type="full", eigenvalue_floor=1e-3,
                                split_scale=0.5)
        for s in (0, 1):
            k = s + 1
            np.testing.assert_allclose(stages[s].params.means[c, :k], alone[s].params.means,
                                       rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(stages[s].params.covariances[c, :k],
                                       alone[s].params.covariances, rtol=1e-9, atol=1e-9)
    # the split finds class 0's two modes: its rows are far likelier under the K=2 stage
    ll = [np.asarray(joint_log_likelihood(s, X[Y == 0]))[:, 0].mean() for s in stages]
    assert ll[1] > ll[0] + 1.0
    assert np.mean(np.asarray(predict_classes(stages[1], X)) == Y) > 0.98
    with pytest.raises(ValueError, match="fewer than max_components"):
        fit_classifier_lbg(X[:72], Y[:72], 4)


def test_class_priors_enter_the_decision():
    """Unequal classes: the Bayes rule uses log p(c). With the prior removed the decision
    boundary moves and overlapping rows are misclassified (the audit's missing test)."""
    rng = np.random.default_rng(1)
    Xa = rng.normal(0.0, 1.0, (300, 2))
    Xb = rng.normal(1.5, 1.0, (30, 2))
    Xs = np.r_[Xa, Xb]
    ys = np.r_[np.zeros(300, int), np.ones(30, int)]
    m = fit_classifier(0, Xs, ys, 1, covariance_type="spherical")
    np.testing.assert_allclose(np.exp(m.class_log_prior), [300 / 330, 30 / 330], rtol=1e-6)
    with_prior = np.mean(np.asarray(predict_classes(m, Xs)) == ys)
    flat = m._replace(class_log_prior=np.log(np.array([0.5, 0.5], np.float32)))
    without = np.mean(np.asarray(predict_classes(flat, Xs)) == ys)
    assert with_prior > without + 0.03, (with_prior, without)
    # the posterior is the normalised joint: log p(c|x) = log p(x|c) + log p(c) - log p(x)
    j = np.asarray(joint_log_likelihood(m, Xs))
    jf = np.asarray(joint_log_likelihood(flat, Xs))
    np.testing.assert_allclose(j - jf, np.broadcast_to(
        np.log([300 / 330, 30 / 330]) - np.log(0.5), j.shape), rtol=1e-5)


def test_open_set_background_class_is_predicted_as_minus_one():
    Xbg = RNG.normal([0, 9], 0.7, (40, 2))
    Xo = np.r_[X, Xbg]
    yo = np.r_[Y, -np.ones(40, int)]
    m = fit_classifier(0, Xo, yo, {0: 2, 1: 1, -1: 1}, covariance_type="diag")
    np.testing.assert_array_equal(m.labels, [0, 1, -1])
    pred = np.asarray(predict_classes(m, Xo))
    assert np.mean(pred == yo) > 0.97
    assert np.all(pred[yo == -1] == -1)
    with pytest.raises(ValueError, match="n_components has no entry for class"):
        fit_classifier(0, Xo, yo, {0: 2, 1: 1}, covariance_type="diag")


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


def test_estimator_per_class_k_background_and_calibration():
    rng = np.random.default_rng(5)
    centres = np.array([[-6.0, 0.0], [6.0, 0.0], [0.0, 6.0], [0.0, -6.0]])
    yall = np.repeat(np.arange(4), 60)
    Xall = centres[yall] + rng.normal(size=(240, 2))
    # classes 0, 1 known; class 2 stands for the "others" seen in training, together with broad
    # background samples; class 3 is never seen
    train = yall < 3
    Xtr = np.r_[Xall[train], rng.normal(0.0, 8.0, (60, 2))]
    ytr = np.r_[np.where(yall[train] == 2, -1, yall[train]), -np.ones(60, int)]
    clf = GMMClassifier({0: 1, 1: 2, -1: 2}, covariance_type="full", random_state=0)
    clf.fit(Xtr, ytr)
    assert list(clf.classes_) == [-1, 0, 1]
    np.testing.assert_array_equal(clf.n_components_, [2, 1, 2])
    assert clf.predict_proba(Xall).shape == (240, 3)
    yval = np.where(yall >= 2, -1, yall)
    score = clf.novelty_score(Xall)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(yval == -1, score) > 0.95
    clf.calibrate(Xall, yval)
    pred = clf.predict(Xall)
    known = yval >= 0
    assert np.mean(pred[known] == yval[known]) > 0.95
    assert np.mean(pred[~known] == -1) > 0.9  # the unseen class 3 is rejected too
    with pytest.raises(ValueError, match="background"):
        GMMClassifier(1).fit(X, Y).novelty_score(X)


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
    np.testing.assert_allclose(np.exp(clf.class_log_prior_), [0.3, 0.7], rtol=1e-6)
    with pytest.raises(ValueError, match="Unknown label type"):
        GMMClassifier(1).fit(X, RNG.normal(size=140))
    with pytest.raises(ValueError, match="not in y"):
        GMMClassifier({0: 1, 5: 1}).fit(X, Y)


def test_selected_sklearn_classifier_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_classifiers_classes("GMMClassifier", GMMClassifier(covariance_type="diag"))
        check_fit2d_predict1d("GMMClassifier", GMMClassifier(covariance_type="diag"))
