"""Without CUDA, megatron-core runs under the test-only CPU shim (see cpu_shim.py)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)
if not torch.cuda.is_available():
    import cpu_shim

    cpu_shim.install()
