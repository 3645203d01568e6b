"""Serving an exported model with its runtime alone (no torch): shared by export, evaluate (the
champion), the registry's pyfunc and `fmpipe predict`."""
