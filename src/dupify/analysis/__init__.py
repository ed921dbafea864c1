"""Pure per-image analysis over decoded RGB pixels and model outputs: colours, hashes, quality,
safety, duplicates, and vector math (unit rows, top labels).

Every function here is synchronous, keeps no state and takes plain data (NumPy arrays, bytes,
floats), so the routes can run it in the decoder's worker processes or in a thread. Nothing here
imports the models: inference and the pipeline import this package, never the reverse.
"""
