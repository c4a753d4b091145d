"""Packaging: metadata and dependencies are in setup.cfg.

The repository's gin/ folder ships inside the package as seqmnist/gin/, so
`--gin_file=pixel.gin` works from an installed wheel too.
"""
import setuptools

setuptools.setup(
    package_dir={'seqmnist': 'seqmnist', 'seqmnist.gin': 'gin'},
    packages=['seqmnist', 'seqmnist.gin'],
    package_data={'seqmnist.gin': ['*.gin', '*/*.gin']},
)
