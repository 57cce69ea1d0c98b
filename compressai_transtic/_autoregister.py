"""Startup hook: register our models into CompressAI as soon as CompressAI is imported.

``compressai_transtic_autoregister.pth`` (installed at the root of
site-packages) imports this module when the interpreter starts, so that
CompressAI's unchanged tools (``python -m compressai.utils.eval_model``,
``python -m examples.train``, ``from compressai.zoo import tic`` ...) see
``tic``, ``transtic`` and ``transtic-{cls,det,seg}`` without the user
importing this package.

It must stay cheap: it imports only :mod:`sys` and :mod:`warnings` (and its
parent package, itself import-light) and installs a
``sys.meta_path`` finder. When the ``compressai`` package has finished
executing (it imports ``compressai.zoo`` itself), the finder's loader wrapper
runs :func:`compressai_transtic.registration.register_models`. If one of
this package's modules is still executing at that moment (it imported
CompressAI, e.g. ``import compressai_transtic.zoo`` in a fresh interpreter),
registration waits until the last of them has finished, because the entry
points it loads live in those modules. The finder removes itself once
registration has run.

While CompressAI's package executes, one warning is silenced: the FutureWarning
that torch raises for every ``torch.jit.script`` call made by CompressAI 1.2.8's
import chain (it would otherwise reach the stderr of every CompressAI tool). The
filter is scoped to that import and to that message; the warning filters are as
before once ``import compressai`` returns.

If CompressAI is already imported when this module is imported, registration
runs at once. Interpreters that skip ``.pth`` files (``python -S``) can call
:func:`compressai_transtic.registration.register_models` themselves, or use
``python -m compressai_transtic.evaluation.eval_model``.
"""

import sys
import warnings

# the package itself: already imported, as this module's parent
from compressai_transtic import _JIT_SCRIPT_WARNING as JIT_SCRIPT_WARNING

_TARGET = "compressai"
_OWN_PACKAGE = "compressai_transtic"


class _State:
    own_modules_executing = 0  # our modules mid-execution (tracked by _ExecTracker)
    pending = False  # CompressAI is loaded, registration is waiting for our modules
    done = False


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def _failure_message(exc: BaseException) -> str:
    """What the warning says: the models registered, and each one refused with why."""
    registered = getattr(exc, "registered", None)
    problems = getattr(exc, "problems", None)
    if registered is None or not problems:  # not a RegistrationError: nothing was registered
        return (
            "compressai-transtic could not register any of its models with CompressAI (none of "
            f"tic, transtic, ... is available to CompressAI's tools): {exc!r}. Run "
            "`python -m compressai_transtic.registration` to see the full error."
        )
    lines = "".join(f"\n  - {problem}" for problem in problems)
    return (
        f"compressai-transtic registered these models with CompressAI: {', '.join(registered) or 'none'}; "
        f"not registered (refused, each with the reason):{lines}"
    )


def _register() -> None:
    """Run registration once; a failure becomes a warning so CompressAI still imports."""
    _State.pending = False
    _State.done = True
    _uninstall()
    try:
        from compressai_transtic.registration import register_models

        register_models()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # reported, not raised: importing CompressAI must not fail or exit
        _warn(_failure_message(exc))


def _maybe_register() -> None:
    if _State.pending and _State.own_modules_executing == 0:
        _register()


def _exec_quietly(loader, module) -> None:
    """Execute CompressAI's package with :data:`JIT_SCRIPT_WARNING` ignored."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_SCRIPT_WARNING, category=FutureWarning)
        loader.exec_module(module)


class _ExecTracker:
    """Loader wrapper calling back when a module has finished executing."""

    def __init__(self, loader, fullname: str) -> None:
        self._loader = loader
        self._fullname = fullname

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        own = self._fullname != _TARGET
        if own:
            _State.own_modules_executing += 1
        executed = False
        try:
            if own:
                self._loader.exec_module(module)
            else:
                _exec_quietly(self._loader, module)
            executed = True
        finally:
            # Give the module its real loader back: the wrapper was only needed for this call.
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
            if own:
                _State.own_modules_executing -= 1
            elif executed:
                _State.pending = True
            _maybe_register()


class _CompressAIImportHook:
    """``sys.meta_path`` finder wrapping the loaders of ``compressai`` and of our own modules."""

    _compressai_transtic_hook = True

    def __init__(self) -> None:
        self._searching: set = set()

    def find_spec(self, fullname, path=None, target=None):
        if _State.done:
            return None
        if fullname != _TARGET and fullname != _OWN_PACKAGE and not fullname.startswith(_OWN_PACKAGE + "."):
            return None
        if fullname in self._searching:
            return None
        self._searching.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._searching.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ExecTracker(spec.loader, fullname)
        return spec


def _installed_hook():
    for finder in sys.meta_path:
        if getattr(finder, "_compressai_transtic_hook", False):
            return finder
    return None


def _uninstall() -> None:
    hook = _installed_hook()
    while hook is not None:
        sys.meta_path.remove(hook)
        hook = _installed_hook()


def install() -> None:
    """Arrange for registration when CompressAI is imported (idempotent)."""
    if _TARGET in sys.modules:
        _State.pending = True
        _maybe_register()
    elif _installed_hook() is None:
        sys.meta_path.insert(0, _CompressAIImportHook())


def finish_startup() -> None:
    """Forget the modules imported by the ``.pth`` line, keeping the installed hook.

    At interpreter start-up ``sys.path`` does not yet hold the script's folder
    or ``python -m``'s working directory, so the ``.pth`` line imports this
    package from site-packages. Dropping it from ``sys.modules`` lets a later
    ``import compressai_transtic`` resolve against ``sys.path`` as it is then
    (e.g. a source checkout being tested), instead of staying pinned to the
    installed copy.
    """
    for name in (__name__, _OWN_PACKAGE):
        sys.modules.pop(name, None)


install()
