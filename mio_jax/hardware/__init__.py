"""Facts about the machine: TPU/GPU chip specs, the CPU's measured peak, which JAX backends start,
and the huge-page re-exec of a command line."""
