"""Compile guards: while a session is attached, ``torch.compile``d graphs guard on module hooks.

Dynamo by default skips guards on ``nn.Module`` hooks, so a graph compiled before gradlens added (or after it
removed) its hooks would run with whichever hook set it was compiled with. While at least one session is
attached, :class:`HookGuards` turns those guards on (a compiled graph recompiles with gradlens's hooks instead of
silently running without them) and restores the previous setting when the last session closes.
"""

from __future__ import annotations

import sys


class HookGuards:
    """While a session is attached, compiled graphs guard on module hooks (``torch.compile`` recompiles when
    gradlens adds or removes its hooks) instead of running whichever hook set was compiled first.

    Only when ``torch._dynamo`` is already imported: before that, nothing is compiled yet, and graphs compiled
    later see gradlens's hooks from the start. The previous setting returns when the last session closes.
    """

    users = 0
    saved: bool | None = None

    @classmethod
    def acquire(cls) -> bool:
        """Turn the guards on for one more session; True when it did (dynamo loaded): call :meth:`release`."""
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return False
        if cls.users == 0:
            cls.saved = dynamo.config.skip_nnmodule_hook_guards
            dynamo.config.skip_nnmodule_hook_guards = False
        cls.users += 1
        return True

    @classmethod
    def release(cls) -> None:
        """One session fewer; the last one restores dynamo's previous setting."""
        cls.users -= 1
        dynamo = sys.modules.get("torch._dynamo")
        if cls.users == 0 and dynamo is not None and cls.saved is not None:
            dynamo.config.skip_nnmodule_hook_guards = cls.saved


def hooks_unguarded() -> bool:
    """Whether dynamo is loaded and skips guards on module hooks: a graph compiled now would not notice gradlens
    adding or removing hooks later (see :mod:`gradlens.session.activations`)."""
    dynamo = sys.modules.get("torch._dynamo")
    return dynamo is not None and bool(dynamo.config.skip_nnmodule_hook_guards)
