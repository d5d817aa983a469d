"""`python -m sefar_fast ...` is the same as the `sefar` command (torchrun uses this form)."""

from sefar_fast.cli.app import main

main()
