"""The `council` command line, named after the distribution (``slm-council``).

It lives outside ``server``, ``council``, ``providers`` and ``training`` because it is the
one place allowed to import all of them: the entry point sits on top of the layers instead
of inside the pipeline package it would otherwise have to reach around.
"""
