"""Thin command-line entry points over the library."""


def default_device() -> str:
    """"cuda" where a GPU is visible, else "cpu": the commands' ``--device`` default."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def boolean(value: str) -> bool:
    """A flag's True or False (also 1/0, yes/no, any case); argparse's ``type`` for boolean flags."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    import argparse

    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")
