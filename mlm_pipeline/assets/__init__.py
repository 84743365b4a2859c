"""One module per pipeline stage; ``definitions.py`` lists them in pipeline order."""
