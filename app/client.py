"""The Python client, kept importable under its old name: it lives in :mod:`genclient.client`.

``from app.client import GenerationClient`` still works, but imports the ``app`` package on the way
(which does not load Flask until ``create_app`` runs); new code imports ``genclient``.
"""
from genclient.client import *  # noqa: F401,F403
from genclient.client import __all__  # noqa: F401
