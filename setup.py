"""Maps the `geoloc` import package onto the `services/` folder.

pyproject.toml holds the metadata; this file exists only because a renamed package
root with automatically discovered subpackages cannot be said in pyproject alone,
and listing subpackages by hand would silently drop a new service from wheels.
"""

from setuptools import find_packages, setup

setup(
    package_dir={"geoloc": "services"},
    packages=["geoloc", *(f"geoloc.{name}" for name in find_packages("services"))],
)
