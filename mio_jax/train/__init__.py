"""Training: state, optimizer, loss, step, metrics/MFU, the loop, synthetic data."""
