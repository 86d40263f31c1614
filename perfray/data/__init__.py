"""Datasets: vectors to index, queries, and exact ground truth."""

from perfray.data.datasets import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
