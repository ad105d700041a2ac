"""Setuptools shim: metadata lives in setup.cfg.

The top-level ``configs/`` folder is shipped inside the wheel as the package
``kerascompress.configs`` so installed copies find their target profiles and recipes.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["kerascompress", "kerascompress.*"])
    + ["kerascompress.configs", "kerascompress.configs.targets", "kerascompress.configs.recipes"],
    package_dir={"kerascompress.configs": "configs"},
    package_data={
        "kerascompress.configs.targets": ["*.yaml", "op_tables/*.yaml"],
        "kerascompress.configs.recipes": ["*.yaml"],
    },
)
