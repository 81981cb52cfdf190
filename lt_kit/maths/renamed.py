"""Keywords renamed in a release, still taken under their old name for one more release.

lt_kit 0.2.0 gave every ``tau`` the name of what it scales (``cn_tau``: the causal-norm logit scale; ``la_tau``:
post-hoc logit adjustment; ``tn_tau``: tau-normalisation; ``loss_tau``: the logit-adjusted loss). Code written
against 0.1.0 passes ``tau=``: :func:`renamed_keyword` keeps such calls working, with a FutureWarning, until the
release that drops the old name. It lives in ``maths``, the lowest room, so the maths, the models and anything
above can use it (``tests/test_packaging.py`` checks that imports go one way).
"""
from __future__ import annotations

import functools
import warnings

RENAMED_IN = "0.2.0"      # the release that renamed tau
REMOVED_IN = "0.3.0"      # the release that drops the old names


def renamed_keyword(old: str, new: str, *, since: str = RENAMED_IN, removal: str = REMOVED_IN):
    """Decorator: the function (or a class's ``__init__``) still takes its keyword's old name ``old`` for
    ``new``, for one release.

    ``old=`` is passed on as ``new=`` with a FutureWarning that names the new keyword and the release that drops
    the old one. FutureWarning, not DeprecationWarning: Python shows it under its default filters wherever the
    call comes from (a notebook cell, a user's own module, a script), where a DeprecationWarning is hidden unless
    the call is in ``__main__``; a keyword that disappears in the next release should be seen by every caller.
    The warning points at the caller's line (for a class, the line that makes the instance). Both names given is
    a TypeError, as Python raises for a keyword given twice.

    The wrapper keeps the function's name, docstring and signature (``functools.wraps``: ``inspect.signature`` and
    ``help()`` show ``new``, never ``old``). On ``__init__`` the messages name the class."""
    def wrap(fn):
        name = fn.__qualname__.removesuffix(".__init__") if fn.__name__ == "__init__" else fn.__name__

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if old in kwargs:                   # the common path (new name or default) costs one dict lookup
                if new in kwargs:
                    raise TypeError(f"{name}() got both {old}= and {new}=; {old} is the old name of {new} "
                                    f"(renamed in lt_kit {since}): pass {new}= only")
                warnings.warn(f"{name}(): the keyword {old}= is now {new}= (renamed in lt_kit {since}); "
                              f"{old}= still works but is removed in lt_kit {removal}", FutureWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        return call
    return wrap

