import torch

# One thread per test process: on a shared 2-core machine more threads spin and run several times slower.
torch.set_num_threads(1)
