"""Model families and the registry behind ``create_model(name, **config)``."""
from aue_edge.train.models.registry import create_model, list_models, model_family

__all__ = ["create_model", "list_models", "model_family"]
