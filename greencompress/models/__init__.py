"""The model side: where models come from (sources.py: built-in zoo, torchvision, a checkpoint, a user's
callable; zoo.py: the built-in models, trained offline) and the data that feeds and scores them (data.py)."""
