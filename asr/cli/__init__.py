"""Thin command-line entry points over the library."""


def default_device() -> str:
    """"cuda" where a GPU is visible, else "cpu": the commands' ``--device`` default."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
