"""esc50ann: environmental sound classification on ESC-50 with an MLP written from scratch.

Stages, each callable on its own (data flows one way):

    dataset  ->  features  ->  folds  ->  model  ->  evaluation  ->  report
"""

__version__ = "0.1.0"
