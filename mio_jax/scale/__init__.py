"""Planning for a pod: AOT compiles for TPU topologies, the roofline model, plan search and the
plan store."""
