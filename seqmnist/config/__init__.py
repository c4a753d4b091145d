"""A run's configuration as text: gin read as written (`gin_text`), and
whether a config may resume a run made with another (`drift`).

May import: the root's foundations (`errors`, `validators`). Nothing here
builds a model or touches TensorFlow.
"""
