"""reprozoo: reproduce a CIFAR-10 image-classifier study as one pipeline.

Kept import-light (no torch) so the Snakefile can use `reprozoo.config` on a
host that only has Snakemake.
"""
__version__ = "0.1.0"
