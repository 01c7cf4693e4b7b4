import sys
from pathlib import Path

# Test helpers (support.py) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
# Generated networks of exact sizes are shared with the benchmarks.
sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
