"""Optax training loop shared by every vae_jax model (VAE, M2, GMVAE).

Model protocol (what :func:`train` needs from a model):

* an ``nnx.Module`` whose trainable leaves are ``nnx.Param``;
* ``loss(self, x, key, y=None) -> (loss, metrics)``: ``x`` (B, D), ``key`` a PRNG key, ``y``
  an optional (B,) int32 label batch with ``-1`` for unlabelled samples; ``loss`` is a scalar
  (mean negative ELBO over the batch plus any extra terms), ``metrics`` a dict of scalars;
* ``elbo(self, x, key) -> (B,)`` per-sample ELBO, used for validation.

How it runs: ``(model, optimizer)`` are split once into a static ``GraphDef`` and a pure
``State``; one epoch is a single ``jax.jit`` program in which ``lax.scan`` runs every batch step
(``nnx.merge`` -> ``nnx.value_and_grad`` -> ``Optimizer.update`` -> ``nnx.state``). The jitted
functions live at module level with the graphdef as a static argument, so a second ``train``
call on a model of the same architecture does not recompile, and the data are arguments, never
closed over.

Randomness: epoch ``e`` uses ``fold_in(key, e)`` for its shuffle, its binarisation and its
per-step keys. Nothing else is random, so the same key gives the same parameters, and a run
resumed from a checkpoint taken after epoch ``e`` continues exactly as the uninterrupted run.

Checkpoints (no pickle): ``checkpoint_dir/checkpoint.npz`` holds every leaf of the model and
optimizer state (flattened, with their tree paths for checking), the number of completed epochs,
the base key, the history so far, a fingerprint of the data/batching and, for VAE/M2/GMVAE, the
JSON description of the model, so :func:`vae_jax.load` can read the model out of it without an
optimizer. It is written to a temporary file and renamed, so a crash never leaves a
half-written checkpoint, and it is only written after an epoch whose losses and parameters are
all finite. ``resume=True`` requires the checkpoint (a mistyped folder is an error, not a fresh
start); ``resume="if_present"`` resumes when it exists. A checkpoint whose model or optimizer
differs from the run's is refused with a message that says which of the two differs.

Inputs are checked before anything is traced (:mod:`vae_jax.validation`).
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from vae_jax import io, validation

Array = jax.Array

CHECKPOINT_NAME = "checkpoint.npz"


# ---------------------------------------------------------------------------- the jitted step


def _step(graphdef, state, x: Array, y: Array | None, key: Array, binarize: bool):
    """One optimisation step on a batch, as a pure function of the split state.

    Args:
        graphdef: static ``GraphDef`` of ``(model, optimizer)``.
        state: ``State`` of ``(model, optimizer)``.
        x: (B, D) batch.
        y: (B,) int32 labels (-1 unlabelled) or None.
        key: PRNG key of this step.
        binarize: draw ``x ~ Bernoulli(x)`` before the step (dynamic binarisation).

    Returns:
        ``(new_state, loss, metrics)``.
    """
    bin_key, loss_key = jax.random.split(key)
    if binarize:
        x = jax.random.bernoulli(bin_key, x).astype(x.dtype)
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(m):
        return m.loss(x, loss_key, y=y)

    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in dict(metrics).items()}
    return nnx.state((model, optimizer)), loss, metrics


train_step = jax.jit(_step, static_argnames=("graphdef", "binarize"))
"""Jitted :func:`_step` for single-step use (tests, custom loops); :func:`train` scans it."""


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


@partial(jax.jit, static_argnames=("graphdef", "n_batches", "batch_size", "binarize"))
def _train_epoch(graphdef, state, X, y, key, *, n_batches, batch_size, binarize):
    """All batch steps of one epoch under ``lax.scan`` (one compiled program)."""
    perm_key, step_key = jax.random.split(key)
    idx = jax.random.permutation(perm_key, X.shape[0])[: n_batches * batch_size]
    idx = idx.reshape(n_batches, batch_size)
    keys = jax.random.split(step_key, n_batches)

    def body(carry, inp):
        bidx, k = inp
        yb = None if y is None else y[bidx]
        new, loss, metrics = _step(graphdef, carry, X[bidx], yb, k, binarize)
        return new, (loss, metrics)

    state, (losses, metrics) = jax.lax.scan(body, state, (idx, keys))
    ok = jnp.all(jnp.isfinite(losses)) & _all_finite(state)
    return state, losses, metrics, ok


@partial(jax.jit, static_argnames=("graphdef", "method", "batch_size", "kwargs"))
def _evaluate(graphdef, state, X, key, *, method, batch_size, kwargs):
    n = X.shape[0]
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n
    Xp = jnp.concatenate([X, jnp.broadcast_to(X[:1], (pad, X.shape[1]))], 0) if pad else X
    Xb = Xp.reshape(n_batches, batch_size, X.shape[1])
    keys = jax.random.split(key, n_batches)
    model = nnx.merge(graphdef, state)
    fn = getattr(model, method)

    def one(inp):
        xb, k = inp
        return fn(xb, k, **dict(kwargs))

    out = jax.lax.map(one, (Xb, keys))
    return out.reshape(n_batches * batch_size, *out.shape[2:])[:n]


def evaluate(
    model: nnx.Module, X, key: Array, *, method: str = "elbo", batch_size: int = 1000,
    **kwargs: Any,
) -> Array:
    """Applies a per-sample method (``elbo``, ``log_marginal``...) over a data set in batches.

    The data are checked first (:func:`vae_jax.validation.check_data` with the model's width
    and likelihood), so a wrong feature count, NaN/inf or out-of-range data raise a clear
    ``ValueError`` instead of failing inside the traced program.

    Args:
        model: model with ``method(x, key, **kwargs) -> (B, ...)``.
        X: (N, D) data.
        key: PRNG key or int seed (batch ``i`` uses ``split(key, n_batches)[i]``).
        method: name of the model method.
        batch_size: evaluation batch size (the last batch is padded and the padding dropped).
        **kwargs: static keyword arguments of the method (hashable, e.g. ``k=100``).

    Returns:
        (N, ...) per-sample results.

    Raises:
        ValueError, TypeError: bad data, batch size or key; a method the model lacks.
    """
    X = validation.check_model_data(model, X)
    if not callable(getattr(model, method, None)):
        raise ValueError(f"{type(model).__name__} has no method {method!r}")
    batch_size = validation.check_int(batch_size, "batch_size")
    graphdef, state = nnx.split(model)
    bs = int(min(batch_size, X.shape[0]))
    return _evaluate(graphdef, state, X, _as_key(key), method=method, batch_size=bs,
                     kwargs=tuple(sorted(kwargs.items())))


def evaluate_elbo(model: nnx.Module, X, key: Array, *, batch_size: int = 1000) -> float:
    """Mean per-sample ELBO of ``model`` on ``X`` (nats).

    Raises:
        ValueError, TypeError: bad data (see :func:`evaluate`).
        FloatingPointError: the ELBO is not finite for some sample (the message says how many
            and the first row): the model, not the data, is at fault, since the data were
            checked to be finite.
    """
    values = np.asarray(evaluate(model, X, key, method="elbo", batch_size=batch_size))
    bad = ~np.isfinite(values)
    if bad.any():
        raise FloatingPointError(
            f"the ELBO is not finite for {int(bad.sum())} of {values.size} samples (first: row "
            f"{int(np.flatnonzero(bad)[0])}); the model's parameters have diverged or the data "
            "are far outside what it was trained on")
    return float(np.mean(values))


# ------------------------------------------------------------------------------ checkpoints


def _as_key(key) -> Array:
    return validation.check_key(key)


def _is_key(leaf) -> bool:
    return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _leaf_paths(state) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


def save_checkpoint(path: str | os.PathLike, state, *, epoch: int, key: Array,
                    history: dict[str, list[float]], fingerprint: dict[str, Any],
                    model_meta: dict | None = None) -> None:
    """Writes a checkpoint atomically as an ``.npz`` of flattened arrays (no pickle).

    Args:
        path: destination file.
        state: pytree of arrays (the ``nnx.State`` of ``(model, optimizer)``).
        epoch: number of completed epochs.
        key: base PRNG key of the run.
        history: per-epoch lists so far.
        fingerprint: small dict of ints describing the run (checked on restore).
        model_meta: optional JSON-serialisable description of the model (class and
            constructor arguments, :func:`vae_jax.io.model_metadata`), so that
            :func:`vae_jax.load` can rebuild the model from the checkpoint alone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(state)
    arrays: dict[str, np.ndarray] = {}
    key_leaves = []
    for i, leaf in enumerate(leaves):
        if _is_key(leaf):
            key_leaves.append(i)
            leaf = jax.random.key_data(leaf)
        arrays[f"leaf_{i:05d}"] = np.asarray(leaf)
    arrays["_paths"] = np.array(_leaf_paths(state), dtype=np.str_)
    arrays["_key_leaves"] = np.array(key_leaves, dtype=np.int64)
    arrays["_epoch"] = np.array(epoch, np.int64)
    arrays["_key"] = np.asarray(jax.random.key_data(key))
    arrays["_history_names"] = np.array(sorted(history), dtype=np.str_)
    for name in history:
        arrays[f"_history/{name}"] = np.asarray(history[name], np.float64)
    for name, value in fingerprint.items():
        arrays[f"_fp/{name}"] = np.asarray(value, np.int64)
    if model_meta is not None:
        arrays["_model_meta"] = np.array(json.dumps(model_meta), dtype=np.str_)
    io.write_npz_atomic(path, arrays)


def _first_difference(a: list[str], b: list[str]) -> tuple[str, str]:
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "<none>"
        y = b[i] if i < len(b) else "<none>"
        if x != y:
            return x, y
    return "<none>", "<none>"


def _part(path: str) -> str:
    """Which half of a ``(model, optimizer)`` state a leaf path belongs to."""
    return "model" if path.startswith("[0]") else "optimizer" if path.startswith("[1]") else ""


def _structure_error(path, paths: list[str], expected: list[str]) -> ValueError:
    for part in ("model", "optimizer"):
        got = [p for p in paths if _part(p) == part]
        want = [p for p in expected if _part(p) == part]
        if got != want:
            first = _first_difference(got, want)
            if part == "model":
                return ValueError(
                    f"checkpoint {path} was written for a different model: {len(got)} model "
                    f"arrays vs {len(want)} in this one (first difference: checkpoint "
                    f"{first[0]}, model {first[1]}); build the model with the architecture of "
                    "the interrupted run, or use another checkpoint_dir")
            return ValueError(
                f"checkpoint {path} holds the state of a different optimizer: {len(got)} "
                f"optimizer arrays vs {len(want)} for this run's (first difference: checkpoint "
                f"{first[0]}, this run {first[1]}); resume with the optimizer= of the "
                "interrupted run (a float learning_rate and a schedule also build different "
                "Adam states), or use another checkpoint_dir")
    first = _first_difference(paths, expected)
    return ValueError(f"checkpoint {path} does not match this run's state ({len(paths)} arrays "
                      f"vs {len(expected)}; first difference {first})")


def load_checkpoint(path: str | os.PathLike, like_state):
    """Reads a checkpoint written by :func:`save_checkpoint` into the structure of ``like_state``.

    Args:
        path: checkpoint file.
        like_state: a state of the same structure (from a freshly built model and optimizer).

    Returns:
        ``(state, epoch, key, history, fingerprint)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a corrupt or truncated file, a file that is not a training checkpoint, or
            a checkpoint whose model or optimizer does not match ``like_state`` (the message
            says which of the two differs).
    """
    contents = io.read_npz(path, what="training checkpoint")
    if "_paths" not in contents or "_epoch" not in contents:
        hint = (" (it is a model file written by vae_jax.save: read it with vae_jax.load)"
                if io.META_KEY in contents else "")
        raise ValueError(f"{path} is not a vae_jax training checkpoint{hint}")
    try:
        paths = [str(p) for p in contents["_paths"]]
        expected = _leaf_paths(like_state)
        if paths != expected:
            raise _structure_error(path, paths, expected)
        key_leaves = set(int(i) for i in contents["_key_leaves"])
        like_leaves, treedef = jax.tree.flatten(like_state)
        leaves = []
        for i, like in enumerate(like_leaves):
            arr = contents[f"leaf_{i:05d}"]
            if i in key_leaves:
                leaves.append(jax.random.wrap_key_data(jnp.asarray(arr)))
                continue
            if arr.shape != tuple(like.shape) or arr.dtype != like.dtype:
                raise ValueError(
                    f"checkpoint {path}: {_part(paths[i])} array {paths[i]} is {arr.shape} "
                    f"{arr.dtype}, this run's is {tuple(like.shape)} {like.dtype}; the "
                    f"{_part(paths[i]) or 'state'} differs from the interrupted run's")
            leaves.append(jnp.asarray(arr))
        epoch = int(contents["_epoch"])
        key = jax.random.wrap_key_data(jnp.asarray(contents["_key"]))
        history = {str(n): [float(v) for v in contents[f"_history/{n}"]]
                   for n in contents["_history_names"]}
        fingerprint = {k[4:]: int(v) for k, v in contents.items() if k.startswith("_fp/")}
    except KeyError as err:
        raise ValueError(f"checkpoint {path} is incomplete (missing {err}); it is corrupt or "
                         "was not written by vae_jax") from err
    return jax.tree.unflatten(treedef, leaves), epoch, key, history, fingerprint


# ------------------------------------------------------------------------------------- train


@functools.lru_cache(maxsize=32)
def _cached_adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


def _default_optimizer(learning_rate) -> optax.GradientTransformation:
    """``optax.adam(learning_rate)``, the same object for the same float rate.

    The transformation is static metadata of the optimizer's graphdef; reusing one object keeps
    the jit cache warm across ``train`` calls (a fresh ``optax.adam`` would recompile).
    """
    if isinstance(learning_rate, int | float):
        return _cached_adam(float(learning_rate))
    return optax.adam(learning_rate)


def _fmt(d: dict[str, float]) -> dict[str, str]:
    return {k: f"{v:.4g}" for k, v in d.items()}


class TrainingDivergedError(FloatingPointError):
    """A non-finite loss, parameter or validation ELBO stopped :func:`train`.

    A ``FloatingPointError`` that carries what the run had done so far.

    Attributes:
        history: the per-epoch history of the completed (finite) epochs, as :func:`train`
            would have returned it.
        epoch: the 0-based epoch in which training stopped.
        checkpoint: path of the last good checkpoint, or None.
    """

    def __init__(self, message: str, *, history: dict[str, list[float]], epoch: int,
                 checkpoint: Path | None = None):
        super().__init__(message)
        self.history = history
        self.epoch = epoch
        self.checkpoint = checkpoint


RESUME_IF_PRESENT = "if_present"


def _check_resume(resume, checkpoint_dir) -> Path | None:
    """The checkpoint file to resume from (None: start fresh), or a clear error."""
    if resume not in (False, True, RESUME_IF_PRESENT):
        raise ValueError(f"resume must be False, True or {RESUME_IF_PRESENT!r}, got {resume!r}")
    if not resume:
        return None
    if checkpoint_dir is None:
        raise ValueError("resume needs checkpoint_dir= (the folder of the interrupted run)")
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME
    if ckpt.is_file():
        return ckpt
    if resume == RESUME_IF_PRESENT:
        return None
    where = (f"{checkpoint_dir} has no {CHECKPOINT_NAME}" if Path(checkpoint_dir).is_dir() else
             f"checkpoint_dir {str(checkpoint_dir)!r} does not exist")
    raise FileNotFoundError(
        f"resume=True but {where}; check the path, or pass resume={RESUME_IF_PRESENT!r} to "
        "resume when a checkpoint exists and start from scratch otherwise")


def _uses_labels(model) -> bool:
    return bool(getattr(model, "uses_labels", True))


def train(
    model: nnx.Module,
    X,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float | Callable[[Array], Array] = 1e-3,
    key,
    y=None,
    X_val=None,
    optimizer: optax.GradientTransformation | None = None,
    binarize: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: bool | str = False,
    progress: bool = True,
    val_batch_size: int = 1000,
) -> tuple[nnx.Module, dict[str, list[float]]]:
    """Trains a model that follows the protocol of this module (``loss`` and ``elbo``).

    Every input is checked before anything is traced: the width of ``X`` and ``X_val`` against
    the model's ``n_features``, NaN/inf (the message gives the first bad rows), values in
    [0, 1] for a Bernoulli likelihood or ``binarize=True``, labels (integers in
    ``[0, n_classes)`` or -1, one per row; labels passed to a model that ignores them are an
    error), and every number of the schedule.

    Args:
        model: the ``nnx.Module`` to train; updated in place and returned.
        X: (N, D) training data (numpy or JAX), float.
        epochs: total number of epochs (on resume, the run continues up to this number).
        batch_size: samples per step; each epoch runs ``N // batch_size`` steps over a fresh
            permutation (the remainder is dropped that epoch; a different one each epoch).
        learning_rate: Adam learning rate, a float or an optax schedule (step -> rate).
        key: PRNG key (or an int seed) for shuffling, binarisation and the model's sampling.
        y: optional (N,) int labels, ``-1`` for unlabelled samples; batched with ``X``. Only
            for models that use labels (M2); VAE and GMVAE refuse them.
        X_val: optional (N_val, D) data; the mean validation ELBO is recorded each epoch.
        optimizer: optax transformation used instead of ``optax.adam(learning_rate)``.
        binarize: dynamic binarisation, ``x ~ Bernoulli(x)`` drawn afresh at every step
            (validation data are binarised once, with a fixed key).
        checkpoint_dir: folder for ``checkpoint.npz``; None disables checkpoints.
        checkpoint_every: save after every this many epochs (and after the last one); 0 saves
            only at the end (when ``checkpoint_dir`` is set).
        resume: ``True`` continues from ``checkpoint_dir/checkpoint.npz`` (parameters,
            optimizer state, completed epochs, key and history are restored) and raises
            ``FileNotFoundError`` if there is none; ``"if_present"`` resumes when the file
            exists and starts from scratch otherwise (for jobs that may be preempted).
        progress: show a tqdm bar with the loss terms.
        val_batch_size: batch size of the validation pass.

    Returns:
        ``(model, history)``: history maps ``"loss"``, every metric the model returns,
        ``"val_elbo"`` (if ``X_val``), ``"epoch_time_s"`` and ``"steps_per_s"`` to per-epoch
        lists.

    Raises:
        TrainingDivergedError: (a ``FloatingPointError``) a non-finite loss, parameter or
            validation ELBO appeared; the model keeps the parameters of the last good epoch,
            the last checkpoint is left untouched, and the error's ``history`` holds the
            completed epochs.
        ValueError, TypeError: bad data, labels or arguments, or a checkpoint that does not
            fit the model, the optimizer or the data (the message says which).
        FileNotFoundError: ``resume=True`` and no checkpoint in ``checkpoint_dir``.

    Example:
        >>> import jax, vae_jax
        >>> from flax import nnx
        >>> ds = vae_jax.data.load_digits()
        >>> m = vae_jax.VAE(64, 2, hidden=(16,), rngs=nnx.Rngs(0))
        >>> m, hist = vae_jax.train(m, ds.X_train, epochs=1, batch_size=64,
        ...                         key=jax.random.key(0), progress=False)
        >>> len(hist["loss"])
        1
    """
    epochs = validation.check_int(epochs, "epochs", minimum=0)
    batch_size = validation.check_int(batch_size, "batch_size")
    checkpoint_every = validation.check_int(checkpoint_every, "checkpoint_every", minimum=0)
    val_batch_size = validation.check_int(val_batch_size, "val_batch_size")
    if optimizer is None and not callable(learning_rate):
        learning_rate = validation.check_float(learning_rate, "learning_rate", positive=True)
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation (e.g. "
                        f"optax.adam(1e-3)), got {type(optimizer).__name__}")
    X = validation.check_model_data(model, X, unit_interval=bool(binarize))
    n = int(X.shape[0])
    batch_size = int(min(batch_size, n))
    n_batches = n // batch_size
    if y is not None:
        if not _uses_labels(model):
            raise ValueError(
                f"{type(model).__name__} is unsupervised and ignores labels; drop y= (use M2 "
                "to train from labels)")
        y = validation.check_labels(y, n, n_classes=getattr(model, "n_components", None))
    X_val_j = None
    if X_val is not None:
        X_val_j = validation.check_model_data(model, X_val, name="X_val",
                                              unit_interval=bool(binarize))
    key = _as_key(key)
    ckpt_in = _check_resume(resume, checkpoint_dir)

    tx = optimizer if optimizer is not None else _default_optimizer(learning_rate)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))

    fingerprint = {"n_samples": n, "n_features": int(X.shape[1]), "batch_size": batch_size,
                   "binarize": int(binarize), "has_labels": int(y is not None)}
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    model_meta = io.model_metadata(model, strict=False) if ckpt is not None else None
    history: dict[str, list[float]] = {}
    start = 0
    if ckpt_in is not None:
        state, start, saved_key, history, fp = load_checkpoint(ckpt_in, state)
        if fp != fingerprint:
            raise ValueError(f"checkpoint {ckpt_in} was written for {fp}, this run is "
                             f"{fingerprint}; pass the data and batch settings of the "
                             "interrupted run, or use another checkpoint_dir")
        if not bool(jnp.all(jax.random.key_data(saved_key) == jax.random.key_data(key))):
            warnings.warn("resume: the checkpoint's key differs from `key`; using the "
                          "checkpoint's key so the run continues the interrupted one", stacklevel=2)
        key = saved_key

    n_val = 0 if X_val_j is None else int(X_val_j.shape[0])
    if X_val_j is not None and binarize:
        X_val_j = jax.random.bernoulli(jax.random.fold_in(key, 2**31 - 1),
                                       X_val_j).astype(jnp.float32)

    def diverged(msg: str, epoch: int) -> TrainingDivergedError:
        last = ckpt if ckpt is not None and ckpt.exists() else None
        return TrainingDivergedError(
            msg + "; training stopped, the model keeps the parameters of the start of epoch "
            f"{epoch}" + (f" and {last} is the last good checkpoint" if last else "")
            + " (the error's .history holds the completed epochs; lower the learning rate)",
            history={k: list(v) for k, v in history.items()}, epoch=epoch, checkpoint=last)

    bar = tqdm(total=epochs, initial=start, disable=not progress, desc="train", unit="epoch")
    try:
        for epoch in range(start, epochs):
            ekey = jax.random.fold_in(key, epoch)
            t0 = time.perf_counter()
            new_state, losses, metrics, ok = _train_epoch(
                graphdef, state, X, y, ekey, n_batches=n_batches, batch_size=batch_size,
                binarize=bool(binarize))
            ok = bool(ok)
            dt = time.perf_counter() - t0
            if not ok:
                bad = np.flatnonzero(~np.isfinite(np.asarray(losses)))
                where = f"at step {int(bad[0])} of epoch {epoch}" if bad.size else \
                    f"in the parameters after epoch {epoch}"
                raise diverged(f"non-finite loss {where}", epoch)
            row = {"loss": float(jnp.mean(losses))}
            row.update({k: float(jnp.mean(v)) for k, v in metrics.items() if k != "loss"})
            if X_val_j is not None:
                vmodel, _ = nnx.merge(graphdef, new_state)
                vgraph, vstate = nnx.split(vmodel)
                vals = _evaluate(vgraph, vstate, X_val_j, jax.random.fold_in(ekey, 1),
                                 method="elbo", batch_size=min(val_batch_size, n_val),
                                 kwargs=())
                val_elbo = float(jnp.mean(vals))
                if not np.isfinite(val_elbo):
                    raise diverged(f"non-finite validation ELBO after epoch {epoch} (the "
                                   "training loss was finite)", epoch)
                row["val_elbo"] = val_elbo
            state = new_state
            row["epoch_time_s"] = dt
            row["steps_per_s"] = n_batches / dt
            for k, v in row.items():
                history.setdefault(k, []).append(v)
            done = epoch + 1
            if ckpt is not None and (done == epochs or
                                     (checkpoint_every and done % checkpoint_every == 0)):
                save_checkpoint(ckpt, state, epoch=done, key=key, history=history,
                                fingerprint=fingerprint, model_meta=model_meta)
            bar.set_postfix(_fmt({k: v for k, v in row.items()
                                  if k not in ("epoch_time_s",)}), refresh=False)
            bar.update(1)
    finally:
        bar.close()
        new_model, _ = nnx.merge(graphdef, state)
        nnx.update(model, nnx.state(new_model))
    return model, history
