"""Suite-wide settings.

One intra-op thread: on these 2-core machines, oversubscribed threads made small tensor ops
10-100x slower when anything else ran, and tests must not depend on the machine's load.
"""

import torch

torch.set_num_threads(1)
