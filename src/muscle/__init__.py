"""muscle-llm: measure and reduce negative flips when updating LLMs.

Importing ``muscle`` is cheap: torch and transformers are imported only by the
modules that need them (evaluation, training, models, scenarios).
"""

from muscle.errors import MuscleError

__version__ = "0.1.0"
__all__ = ["MuscleError", "__version__"]
