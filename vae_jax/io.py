"""Saving and loading trained models without pickle: :func:`save` and :func:`load`.

A model file is an uncompressed ``.npz`` holding

* ``__vae_jax__``: a JSON string (a 0-d unicode array, readable with
  ``allow_pickle=False``) with the format name and version, the model class (``"VAE"``,
  ``"M2"`` or ``"GMVAE"``), its constructor arguments (``model.get_config()``), a few run-time
  attributes (a GMVAE's ``pretraining`` flag) and the list of stored arrays with their shapes
  and dtypes;
* one array per variable of ``nnx.state(model)``, named by its tree path
  (``"['encoder']['mean_head']['kernel'].value"``).

:func:`load` rebuilds the model from the class and its arguments and fills in the arrays, so
it needs neither the original Python objects nor an optimizer. It also reads the model out of
a training checkpoint written by :func:`vae_jax.train` (``checkpoint_dir/checkpoint.npz``),
which stores the same JSON description beside the optimizer state.

Files are written to a temporary name and renamed, so an interrupted save never leaves a
half-written file; corrupt, truncated or pickled files raise a ``ValueError`` that says so.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

FORMAT = "vae_jax.model"
VERSION = 1
META_KEY = "__vae_jax__"
_CHECKPOINT_META = "_model_meta"
_RUNTIME_ATTRS = {"GMVAE": ("pretraining", "pretrain_noise")}


def _model_classes() -> dict[str, type]:
    from vae_jax.gmvae import GMVAE
    from vae_jax.m2 import M2
    from vae_jax.vae import VAE

    return {"VAE": VAE, "M2": M2, "GMVAE": GMVAE}


# ------------------------------------------------------------------------------ npz helpers


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` as an uncompressed ``.npz`` at exactly ``path`` (no suffix added),
    through a temporary file that is fsynced and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_npz(path: str | os.PathLike, *, what: str = "file") -> dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` with ``allow_pickle=False``, translating failures.

    Args:
        path: file path.
        what: what the file should be, for the messages (``"model file"``...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a directory, not an ``.npz`` (corrupt or truncated zip), or a file
            holding pickled objects (vae_jax never writes them).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a {what}"
                         + (" (a training checkpoint lives in "
                            f"{str(path / 'checkpoint.npz')!r})"
                            if (path / "checkpoint.npz").is_file() else ""))
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            return {name: z[name] for name in z.files}
    except ValueError as err:
        if "pickle" in str(err).lower() or "object arrays" in str(err).lower():
            raise ValueError(
                f"{str(path)!r} holds pickled Python objects, which vae_jax never writes and "
                f"will not load (loading pickles can run arbitrary code); it is not a {what} "
                "written by vae_jax") from err
        raise ValueError(f"{str(path)!r} is not a valid {what} ({err})") from err
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as err:
        raise ValueError(
            f"{str(path)!r} is corrupt or truncated, not a readable {what} ({type(err).__name__}: "
            f"{err}); write it again or restore a copy") from err


def _json_array(obj: Any) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True), dtype=np.str_)


def _leaves_with_paths(state) -> list[tuple[str, Any]]:
    return [(jax.tree_util.keystr(p), leaf)
            for p, leaf in jax.tree_util.tree_flatten_with_path(state)[0]]


# ---------------------------------------------------------------------------- model metadata


def model_metadata(model: nnx.Module, *, strict: bool = True) -> dict | None:
    """The JSON description (class, constructor arguments, run-time attributes) of a model.

    Args:
        model: a ``VAE``, ``M2`` or ``GMVAE``.
        strict: raise for models that cannot be described; if False return None instead
            (used for training checkpoints of custom models).

    Raises:
        TypeError: (strict) another class, or a model built with a custom activation
            callable that has no name.
    """
    name = type(model).__name__
    classes = _model_classes()
    if name not in classes or type(model) is not classes[name]:
        if not strict:
            return None
        raise TypeError(f"vae_jax.save supports {tuple(classes)}, got {name}; for another "
                        "nnx.Module save nnx.state(model) yourself (e.g. with "
                        "vae_jax.save_checkpoint)")
    config = model.get_config()
    if "activation" in config and config["activation"] is None:
        if not strict:
            return None
        raise TypeError(f"this {name} was built with a custom activation callable, which "
                        "cannot be stored without pickle; build it with an activation name "
                        "from vae_jax.nets.ACTIVATIONS")
    attrs = {a: getattr(model, a) for a in _RUNTIME_ATTRS.get(name, ())}
    return dict(format=FORMAT, version=VERSION, model_class=name, config=config,
                attributes=attrs)


def _build(meta: dict, path) -> nnx.Module:
    classes = _model_classes()
    name = meta.get("model_class")
    if name not in classes:
        raise ValueError(f"{str(path)!r} holds a model of unknown class {name!r}; this vae_jax "
                         f"can load {tuple(classes)}")
    config = dict(meta.get("config", {}))
    for k in ("hidden", "prior_hidden"):
        if k in config:
            config[k] = tuple(config[k])
    try:
        model = classes[name](**config, rngs=nnx.Rngs(0))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r}: cannot rebuild {name} from the stored arguments "
                         f"{config} ({err})") from err
    for attr, value in meta.get("attributes", {}).items():
        setattr(model, attr, value)
    return model


def _fill(model: nnx.Module, arrays: dict[str, np.ndarray], path, *, prefix: str = "") -> None:
    """Writes stored arrays (named by tree path, optionally with a prefix) into ``model``."""
    state = nnx.state(model)
    leaves = _leaves_with_paths(state)
    stored = {k[len(prefix):] for k in arrays if k.startswith(prefix)}
    expected = {p for p, _ in leaves}
    if stored != expected:
        missing = sorted(expected - stored)
        extra = sorted(stored - expected)
        raise ValueError(f"{str(path)!r} does not match the rebuilt model: missing arrays "
                         f"{missing[:3]}, unexpected arrays {extra[:3]}; the file is corrupt or "
                         "was written by an incompatible version")
    new_leaves = []
    for p, like in leaves:
        arr = arrays[prefix + p]
        if jnp.issubdtype(like.dtype, jax.dtypes.prng_key):
            new_leaves.append(jax.random.wrap_key_data(jnp.asarray(arr)))
            continue
        if arr.shape != tuple(like.shape) or arr.dtype != like.dtype:
            raise ValueError(f"{str(path)!r}: array {p} is {arr.shape} {arr.dtype}, the model "
                             f"built from the stored arguments has {tuple(like.shape)} "
                             f"{like.dtype}")
        new_leaves.append(jnp.asarray(arr))
    treedef = jax.tree.structure(state)
    nnx.update(model, jax.tree.unflatten(treedef, new_leaves))


# -------------------------------------------------------------------------------- save/load


def save(model: nnx.Module, path: str | os.PathLike) -> Path:
    """Saves a ``VAE``, ``M2`` or ``GMVAE``: class, constructor arguments and weights, one
    ``.npz`` at exactly ``path``, no pickle.

    Args:
        model: the model.
        path: destination file (parent folders are created; no suffix is added).

    Returns:
        The path written.

    Raises:
        TypeError: another kind of module, or a model with an unnamed custom activation.

    Example:
        >>> import os, tempfile, numpy as np
        >>> from flax import nnx
        >>> import vae_jax
        >>> m = vae_jax.GMVAE(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
        >>> p = vae_jax.save(m, os.path.join(tempfile.mkdtemp(), "gmvae.npz"))
        >>> m2 = vae_jax.load(p)
        >>> type(m2).__name__, m2.get_config() == m.get_config()
        ('GMVAE', True)
    """
    meta = model_metadata(model, strict=True)
    arrays: dict[str, np.ndarray] = {}
    listing = []
    for p, leaf in _leaves_with_paths(nnx.state(model)):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        arr = np.asarray(leaf)
        arrays[p] = arr
        listing.append([p, list(arr.shape), str(arr.dtype)])
    meta["arrays"] = listing
    arrays[META_KEY] = _json_array(meta)
    write_npz_atomic(path, arrays)
    return Path(path)


def _read_meta(raw: np.ndarray, path) -> dict:
    try:
        meta = json.loads(str(raw))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{str(path)!r}: the model description is not valid JSON ({err}); "
                         "the file is corrupt") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{str(path)!r}: the model description is not a JSON object")
    return meta


def load(path: str | os.PathLike) -> nnx.Module:
    """Loads a model written by :func:`save`, or the model inside a :func:`vae_jax.train`
    checkpoint, without an optimizer.

    Args:
        path: a model ``.npz`` from :func:`save`, or a checkpoint file (or its folder) from
            ``train(..., checkpoint_dir=...)``.

    Returns:
        The rebuilt ``VAE``, ``M2`` or ``GMVAE`` with the stored weights.

    Raises:
        FileNotFoundError: no such file.
        ValueError: corrupt, truncated or pickled files, files of a newer format version,
            checkpoints of custom models (no description stored), or arrays that do not match
            the stored architecture.
    """
    path = Path(path)
    if path.is_dir() and (path / "checkpoint.npz").is_file():
        path = path / "checkpoint.npz"
    arrays = read_npz(path, what="vae_jax model file")
    if META_KEY in arrays:
        meta = _read_meta(arrays.pop(META_KEY), path)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a vae_jax model file (format "
                             f"{meta.get('format')!r})")
        if int(meta.get("version", 0)) > VERSION:
            raise ValueError(f"{str(path)!r} was written by a newer vae_jax (format version "
                             f"{meta.get('version')}, this one reads up to {VERSION}); upgrade")
        model = _build(meta, path)
        _fill(model, arrays, path)
        return model
    if "_paths" in arrays and "_epoch" in arrays:
        if _CHECKPOINT_META not in arrays:
            raise ValueError(
                f"{str(path)!r} is a training checkpoint of a model vae_jax cannot rebuild on "
                "its own (a custom module); build the model and optimizer and use "
                "vae_jax.load_checkpoint(path, nnx.state((model, optimizer)))")
        meta = _read_meta(arrays[_CHECKPOINT_META], path)
        model = _build(meta, path)
        paths = [str(p) for p in arrays["_paths"]]
        named = {p: arrays[f"leaf_{i:05d}"] for i, p in enumerate(paths)
                 if p.startswith("[0]")}
        _fill(model, named, path, prefix="[0]")
        return model
    raise ValueError(f"{str(path)!r} is an .npz but not a vae_jax model file or training "
                     "checkpoint (no model description inside)")
