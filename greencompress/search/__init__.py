"""`greencompress search`: the cheapest model within an accuracy budget, measured on the runtime that serves it.

spec.py is the recipe's `search:` section; trial.py writes a point of the space into the base recipe
and reads a finished run back; proxy.py times untrained candidates first; study.py runs the loop on
Optuna; summary.py writes the front, the trials table and best.yaml.
"""
