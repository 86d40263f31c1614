"""What a run writes: per-request Parquet, the manifest, tables."""
