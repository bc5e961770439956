"""Online learning: the dynamic-evaluation step, replay, anchoring, checkpoints and evaluation."""
