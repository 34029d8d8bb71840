"""The older name of :mod:`jmf.models.base` (the contract and the model families), kept for code written
against it: every name is the same object as there."""

from jmf.models.base import *  # noqa: F401,F403
from jmf.models.base import __all__  # noqa: F401
