"""The compiled part of the build (everything else is in pyproject.toml): the rebuild's bucket
loader, Cython over one self-contained C header (service/firstseen/bucket_core.h). Needs only
gcc and the Python headers; Cython comes from [build-system] requires."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    [Extension("service.firstseen._bucket_loader", ["service/firstseen/_bucket_loader.pyx"],
               include_dirs=["service/firstseen"], depends=["service/firstseen/bucket_core.h"],
               extra_compile_args=["-O3"])],
    language_level=3,
))
