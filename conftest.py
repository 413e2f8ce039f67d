"""Makes the repository root importable for pytest (``hpt_jax``, ``input_pipeline``, ``launch``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
