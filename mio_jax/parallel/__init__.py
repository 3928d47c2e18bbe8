"""Device meshes and logical-axis rules, placing params on a mesh, and preemption signals."""
