"""What the command lines share (flags, one-line user errors, a quiet console) and each command's
code; the `python -m` entry points at the package's top call into it."""
