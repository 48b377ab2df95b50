"""The ``qresnet`` command: argument parsing and printing only (``main``), the backend flags every command shares
(``arguments``) and the device-jobs commands (``jobs``). Nothing here computes; it calls the packages below."""

from qresnet.cli.main import main

__all__ = ["main"]
