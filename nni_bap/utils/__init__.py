"""Small utilities under everything else: atomic files and hashes, safe unpickling, devices, several processes,
timing, lazy package attributes."""
