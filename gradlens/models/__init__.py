"""Model zoo of the five skip-connection documents, built from one registry.

Importing this package imports every model module, which registers its families.
"""

from gradlens.models import (  # noqa: F401  (imported for registration)
    concat_cnn,
    concat_mlp,
    connections,
    explainer,
    mlp,
    preact,
    resnet_v1,
    schematic,
    short_circuit,
    simplified,
    thin_mlp,
    transformer,
    transforms,
    van,
)
from gradlens.models.registry import create_model, families, list_models, register_family

__all__ = ["create_model", "families", "list_models", "register_family"]
