"""Training: state, optimizer, loss, the step and its metrics/MFU, evaluation during training,
resume and init_from, the workdir claim, and the loop."""
