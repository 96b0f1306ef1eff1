"""Model registry: ``create_model(name, **kw)`` and ``list_models(pattern)``.

A *family* is registered once with a name template whose placeholders encode hyperparameters, e.g.
``"resnet_v1_{depth}"`` or ``"thin_mlp_{variant}_{depth}"``. ``create_model("resnet_v1_56")`` parses the
name, converts the placeholders and calls the family's builder with them plus ``**kw``. ``list_models``
lists the family's canonical example names (the ones the shared model test builds).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class Family:
    """A registered model family.

    Attributes:
        template: name template, e.g. ``"resnet_v1_{depth}"``.
        builder: called as ``builder(**placeholders, **kw)``; validates its arguments itself.
        params: placeholder -> regex alternative (``"plain|resnet"``) or ``int``.
        examples: canonical names, listed by ``list_models`` and built by the shared model test.
        summary: one line describing the family.
    """

    template: str
    builder: Builder
    params: dict[str, str | type]
    examples: tuple[str, ...]
    summary: str

    def match(self, name: str) -> dict[str, object] | None:
        """Parse ``name`` against the template; None when it does not fit."""
        pattern = re.escape(self.template)
        for key, kind in self.params.items():
            body = r"\d+" if kind is int else str(kind)
            pattern = pattern.replace(re.escape("{" + key + "}"), f"(?P<{key}>{body})")
        found = re.fullmatch(pattern, name)
        if found is None:
            return None
        return {k: int(v) if self.params[k] is int else v for k, v in found.groupdict().items()}


_FAMILIES: dict[str, Family] = {}


def register_family(
    template: str,
    *,
    params: dict[str, str | type] | None = None,
    examples: Sequence[str],
    summary: str,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``template``.

    Example::

        @register_family("resnet_v1_{depth}", params={"depth": int},
                         examples=["resnet_v1_20"], summary="ResNet-v1 for CIFAR, depth 6n+2")
        def resnet_v1(depth: int, num_classes: int = 10) -> nn.Module: ...
    """

    def decorate(builder: Builder) -> Builder:
        if template in _FAMILIES:
            raise ValueError(f"model family {template!r} is registered twice")
        family = Family(template, builder, dict(params or {}), tuple(examples), summary)
        for example in family.examples:
            if family.match(example) is None:
                raise ValueError(f"example {example!r} does not fit template {template!r}")
        _FAMILIES[template] = family
        return builder

    return decorate


def families() -> list[Family]:
    """All registered families, in registration order.

    Every family is registered by then: importing this module first runs ``gradlens/models/__init__.py``, which
    imports every model module (each decorates its builders).
    """
    return list(_FAMILIES.values())


def create_model(name: str, **kw: object) -> nn.Module:
    """Build the model called ``name``; ``kw`` are passed to the family's builder.

    Raises:
        KeyError: unknown name; the message lists close matches.
    """
    for family in families():
        parsed = family.match(name)
        if parsed is not None:
            return family.builder(**parsed, **kw)
    known = list_models()
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else "see gradlens.models.list_models()"
    raise KeyError(f"unknown model {name!r}; {hint}")


def list_models(pattern: str = "*") -> list[str]:
    """Canonical model names matching the shell-style ``pattern`` (e.g. ``"thin_mlp_*"``)."""
    return [n for family in families() for n in family.examples if fnmatch.fnmatch(n, pattern)]
