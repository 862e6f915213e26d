"""Builds the wheel with libspecdec.so inside (pyproject.toml has the metadata).

The library comes from $SPECDEC_LIB when set (a built build/lib/libspecdec.so), else it is
built here from the repository this folder sits in: cmake configures a private build
folder (python/build/cmake; $SPECDEC_CMAKE_ARGS are passed on, e.g. -DSPECDEC_CUDA=OFF)
and builds the `specdec_shared` target only."""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent


def find_or_build_library() -> Path:
    given = os.environ.get("SPECDEC_LIB")
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"specdec: SPECDEC_LIB={given} is not a file")
        return path
    root = HERE.parent
    if not (root / "CMakeLists.txt").is_file() or not (root / "include/specdec/specdec.h").is_file():
        raise SystemExit(f"specdec: {root} is not the specdec repository, so the C library cannot "
                         "be built here; set SPECDEC_LIB to a built libspecdec.so")
    if shutil.which("cmake") is None:
        raise SystemExit("specdec: building the C library needs cmake (scripts/install-deps.sh "
                         "installs it), or set SPECDEC_LIB to a built libspecdec.so")
    build = HERE / "build" / "cmake"
    args = os.environ.get("SPECDEC_CMAKE_ARGS", "").split()
    subprocess.check_call(["cmake", "-S", str(root), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                           "-DSPECDEC_TESTS=OFF", *args])
    subprocess.check_call(["cmake", "--build", str(build), "--target", "specdec_shared", "-j",
                           str(os.cpu_count() or 1)])
    return build / "lib" / "libspecdec.so"


class BuildWithLibrary(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "specdec" / "libspecdec.so"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(find_or_build_library(), target)


class BinaryDistribution(Distribution):
    """The wheel carries a native library: platform-specific."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
