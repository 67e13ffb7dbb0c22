"""Kept for one release: the recipe moved to greencompress.pipeline (`from greencompress.pipeline import load_recipe`)."""

from greencompress.pipeline.recipe import Recipe, load_recipe, recipe_to_dict

__all__ = ["Recipe", "load_recipe", "recipe_to_dict"]
