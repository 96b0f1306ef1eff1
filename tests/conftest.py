"""Suite-wide settings: one torch thread (the tests use tiny tensors, where thread start-up dominates)."""

import torch

torch.set_num_threads(1)
