"""Where and how a stage process runs: device, threads, seeds, and DDP process groups."""
