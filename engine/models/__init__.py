"""Models: saved-model versions (LightGBM text + meta.json), training a version,
forests compiled to machine code (lleaves), and batch scoring of a partition.

Used by the design node (Lab), the automation node (score, retrain) and the API node
(compiled predict). May import ``engine.project`` and below.
"""
