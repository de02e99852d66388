"""Training: the fold loop and what it is made of (schedule, losses, batch sources, DDP)."""
