"""The core every layer stands on: errors, files, registries, the config base, the cache folder, the CPU's facts.

Nothing here knows about models, runtimes or recipes.
"""

__version__ = "0.1.0"
