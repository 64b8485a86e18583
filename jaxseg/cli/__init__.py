"""What the commands (`python -m jaxseg.X`) share besides the library: their common flags."""
