"""Critic sampling at inference (CodeRL Sec. 3.3): refining, repairing, the repair model."""
