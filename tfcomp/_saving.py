"""``.keras`` files of tfcomp models load after ``import keras, tfcomp``.

Keras 3 resolves a custom class of a ``.keras`` file by its
``registered_name`` (``"tfcomp>QuantConv2D"``) in the table that
``keras.saving.register_keras_serializable`` fills when the class is
defined; it imports the ``module`` recorded beside it only for Keras' own
packages. So a tfcomp class is known only once the module defining it has
been imported. ``import tfcomp`` must stay light (no Keras, no
TensorFlow), so it does not import those modules itself: :func:`install`
(called by ``tfcomp/__init__``) registers them as soon as Keras is there:

* Keras already imported: right away.
* otherwise: a ``sys.meta_path`` finder waits for ``import keras`` to
  finish, then imports :data:`REGISTERING_MODULES` (about 0.2 s on top of
  Keras' own seconds); it does nothing after that.

Registration runs only where no tfcomp module is half imported (a tfcomp
module that imports Keras registers once the outermost tfcomp import
finishes), so it never sees a partly initialised tfcomp package.

:func:`load_model` is ``keras.saving.load_model`` with an error that names
the class and the package to import when a file needs an unregistered
class.

Example:
    >>> import keras, tfcomp
    >>> model = keras.saving.load_model("qat.keras")   # tfcomp layers known
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import os
import sys
import threading
import warnings
import zipfile

__all__ = ["REGISTERING_MODULES", "install", "register_classes",
           "is_registered", "load_model", "unregistered_classes"]

#: The modules that define tfcomp's Keras-serialisable classes (layers,
#: quantizers, pruning schedules). ``tests/reliability/test_keras_files.py``
#: checks that importing them registers every ``tfcomp>`` class.
REGISTERING_MODULES = ("tfcomp.layers", "tfcomp.pruning.schedules",
                       "tfcomp.pruning.gal", "tfcomp.pruning.slimmable",
                       "tfcomp.distill.distiller", "tfcomp.binary.vote")

_lock = threading.Lock()
_state = {"pending": False, "done": False, "running": False}


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _tfcomp_imports_in_progress(current: str | None = None) -> bool:
    """Whether a tfcomp module other than ``current`` is half imported."""
    for name in list(sys.modules):
        if (name == "tfcomp" or name.startswith("tfcomp.")) \
                and name != current and _initializing(name):
            return True
    return False


def register_classes() -> None:
    """Imports :data:`REGISTERING_MODULES` (registering every tfcomp class
    with Keras). Idempotent; a module that fails to import is reported
    with a warning, not raised, since this may run inside ``import keras``.

    Example:
        >>> register_classes()
    """
    if _state["done"] or not _lock.acquire(blocking=False):
        return  # done, or another thread is registering: never wait on it
    try:
        if _state["done"] or _state["running"]:
            return
        _state["running"] = True
        for name in REGISTERING_MODULES:
            try:
                importlib.import_module(name)
            except Exception as e:  # noqa: BLE001 - never break keras
                warnings.warn(
                    f"tfcomp could not register its Keras classes ({name}: "
                    f"{type(e).__name__}: {e}); import {name} before "
                    "loading tfcomp .keras files.", RuntimeWarning,
                    stacklevel=2)
        _state["done"] = True
        _state["pending"] = False
    finally:
        _state["running"] = False
        _lock.release()


def _maybe_register(current: str | None = None) -> None:
    """Registers if Keras is imported and no tfcomp module (other than
    ``current``, whose code has just run) is half imported."""
    if not _state["pending"] or _state["done"] or _state["running"]:
        return
    if current != "keras" and _initializing("keras"):
        return
    if _tfcomp_imports_in_progress(current):
        return
    register_classes()


def _safely_register(current: str | None) -> None:
    """``_maybe_register`` that never makes the import running it fail
    (e.g. its warning turned into an error by ``-W error``); a failed
    registration is retried by the next tfcomp import or ``load_model``."""
    try:
        _maybe_register(current)
    except Exception:  # noqa: BLE001, S110
        pass


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Wraps the loaders of ``keras`` and of ``tfcomp.*`` modules so that
    tfcomp's classes are registered once ``import keras`` has finished and
    no tfcomp module is half imported. Inert once that is done."""

    def find_spec(self, fullname, path=None, target=None):
        if _state["done"] or (fullname != "keras"
                              and not fullname.startswith("tfcomp.")):
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None or getattr(exec_module, "_tfcomp", False):
            return spec

        def exec_then_register(module, _exec=exec_module):
            _exec(module)
            name = getattr(module, "__name__", "")
            if name == "keras":
                _state["pending"] = True
            _safely_register(name)

        exec_then_register._tfcomp = True
        try:  # on this spec's own loader instance only
            loader.exec_module = exec_then_register
        except (AttributeError, TypeError):
            pass
        return spec


_finder = _RegisterAfterKeras()


def install() -> None:
    """Registers tfcomp's Keras classes now if Keras is imported, else as
    soon as it is (see the module doc). Called by ``import tfcomp``.

    Example:
        >>> install()
    """
    if _state["done"]:
        return
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    if "keras" in sys.modules:
        _state["pending"] = True
        _safely_register("tfcomp")


# ------------------------------------------------------------- loading


def _objects(node):
    """Every ``{"class_name", "config", ...}`` object in a saved config."""
    if isinstance(node, dict):
        if "class_name" in node and isinstance(node.get("class_name"), str):
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def is_registered(registered_name: str, custom_objects=None) -> bool:
    """Whether Keras can resolve ``registered_name`` (``"pkg>Class"``).

    Example:
        >>> is_registered("tfcomp>QuantConv2D")
        True
    """
    import keras

    return keras.saving.get_registered_object(
        registered_name, custom_objects=custom_objects) is not None


def unregistered_classes(path, custom_objects=None) -> list:
    """``(registered_name, module)`` of the custom classes a ``.keras``
    file needs that Keras cannot resolve in this process.

    Example:
        >>> unregistered_classes("qat.keras")
        []
    """
    try:
        with zipfile.ZipFile(os.fspath(path)) as zf:
            config = json.loads(zf.read("config.json").decode("utf-8"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    missing, seen = [], set()
    for obj in _objects(config):
        name = obj.get("registered_name")
        module = obj.get("module") or ""
        if not isinstance(name, str) or ">" not in name or name in seen:
            continue
        seen.add(name)
        if module == "keras" or module.startswith("keras."):
            continue
        if not is_registered(name, custom_objects):
            missing.append((name, module))
    return missing


def _missing_message(path, missing) -> str:
    parts = []
    for name, module in missing:
        package = (module or name.split(">")[0]).split(".")[0]
        where = f" (module {module!r})" if module else ""
        parts.append(f"{name!r}{where}: import {package}")
    return (f"cannot load {os.fspath(path)!r}: it needs custom classes that "
            f"are not registered with Keras: {'; '.join(parts)} before "
            "loading it (or pass custom_objects=...).")


def load_model(path, custom_objects=None, compile: bool = True,  # noqa: A002
               safe_mode: bool = True):
    """``keras.saving.load_model`` with tfcomp's classes registered and an
    error naming the class and the package to import when the file needs
    a class that is not registered.

    Args:
        path: a ``.keras`` file.
        custom_objects, compile, safe_mode: as ``keras.saving.load_model``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file needs an unregistered class (the message
            names it, its module and the package to import).

    Example:
        >>> model = tfcomp.load_model("pruned.keras")
    """
    import keras

    register_classes()
    if not os.path.exists(os.fspath(path)):
        raise FileNotFoundError(f"model file not found: {os.fspath(path)!r}")
    missing = unregistered_classes(path, custom_objects)
    if missing:
        raise ValueError(_missing_message(path, missing))
    return keras.saving.load_model(path, custom_objects=custom_objects,
                                   compile=compile, safe_mode=safe_mode)
