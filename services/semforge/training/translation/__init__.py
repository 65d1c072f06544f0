"""Height map -> SEM image translation (CycleGAN) and the content check of its outputs."""
