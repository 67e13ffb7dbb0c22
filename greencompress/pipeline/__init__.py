"""One run, end to end: recipe.py assembles and validates the recipe; execute.py runs it (load, export,
compress, measure, report) through the other layers; folder.py, stages.py, artifacts.py, measurement.py and
gates.py are its parts.

    from greencompress.pipeline import create_run_dir, load_recipe, run

    recipe = load_recipe("recipes/resnet_int8.yaml", overrides=["benchmark.batch_sizes=[1]"])
    report = run(recipe, create_run_dir(recipe))
"""

from greencompress.pipeline.execute import run
from greencompress.pipeline.folder import create_run_dir
from greencompress.pipeline.recipe import Recipe, load_recipe, recipe_to_dict

__all__ = ["Recipe", "create_run_dir", "load_recipe", "recipe_to_dict", "run"]
