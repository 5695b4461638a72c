"""Typer sub-apps, one module per noun: parse the command line, call the domain layer, render results."""
