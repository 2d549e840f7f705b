"""Recipes: YAML files (with ``_base_`` inheritance and ``--set`` overrides) validated by pydantic.

Public entry point: :func:`load_recipe`. Nothing here imports torch.
"""
from wsolctl.errors import RecipeError
from wsolctl.recipe.loader import load_recipe
from wsolctl.recipe.schema import Recipe

__all__ = ["Recipe", "RecipeError", "load_recipe"]
