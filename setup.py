"""The compiled part of the build (everything else is in pyproject.toml), Cython needing only
gcc and the Python headers (Cython comes from [build-system] requires): the rebuild's bucket
loader over one self-contained C header (service/firstseen/bucket_core.h); the first-seen
store's packing of a batch, over the same header's SHA-256; and the binary COPY encoder the
record's writes go through (service/kit/_pg_copy.pyx). Each has a pure-Python reference the
tests hold it equal to."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    [Extension("service.firstseen._bucket_loader", ["service/firstseen/_bucket_loader.pyx"],
               include_dirs=["service/firstseen"], depends=["service/firstseen/bucket_core.h"],
               extra_compile_args=["-O3"]),
     Extension("service.firstseen._packing", ["service/firstseen/_packing.pyx"],
               include_dirs=["service/firstseen"], depends=["service/firstseen/bucket_core.h"],
               extra_compile_args=["-O3"]),
     Extension("service.kit._pg_copy", ["service/kit/_pg_copy.pyx"],
               extra_compile_args=["-O3"])],
    language_level=3,
))
