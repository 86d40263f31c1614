"""Ray: connecting (embedded or a cluster), logical GPUs, and the thin actor wrappers."""
