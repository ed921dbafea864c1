"""Pure per-image analysis over decoded RGB pixels: colours, hashes, quality, safety, duplicates.

Every function here is synchronous, keeps no state and takes plain data (NumPy arrays, bytes,
floats), so the routes can run it in the decoder's worker processes or in a thread.
"""
