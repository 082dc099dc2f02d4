"""Package layout only; all metadata lives in pyproject.toml.

The repository's top level shows the data flow (capture -> visit -> hub -> sync), one folder
a step; installed, every part lives under the one `footfall` import package.
"""

from setuptools import find_packages, setup

ROOTS = {
    "footfall": "footfall",
    "footfall.edge_agent": "edge_agent",
    "footfall.hub": "hub",
    "footfall.cloud_sync": "cloud_sync",
    "footfall.tools": "tools",
}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=ROOTS,
    package_data={
        "footfall.hub": ["*.json", "static/*", "static/**/*", "templates/*"],
        "footfall.cloud_sync": ["central/static/*"],
    },
)
