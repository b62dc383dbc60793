"""Extension modules and their compiler flags. Metadata lives in pyproject.toml."""

import os
import shutil
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "tools"))
import build_helpers  # noqa: E402

# _kernels compiles the C kernels of src_c/ (once) and holds the choice of
# instruction set; each family's module (_conv, _pool, ...) calls them through
# _kernels.pxd.
KERNEL_MODULES = ["_openmp", "_kernels", "_conv", "_pool", "_activation", "_dense", "_loss",
                  "_im2col", "_optim", "_norm"]


class BuildExt(build_ext):
    """Detect OpenMP once, give every extension the same flags, and record
    the outcome in fastcnn/_build_info.py."""

    def build_extensions(self):
        compile_args, link_args, info = build_helpers.configure(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args = list(compile_args)
            ext.extra_link_args = list(link_args)
        info["debug_cython"] = build_helpers.env_flag("FASTCNN_DEBUG_CYTHON")
        pkg_dir = os.path.join(self.build_lib, "fastcnn")
        os.makedirs(pkg_dir, exist_ok=True)
        self._build_info_path = os.path.join(pkg_dir, "_build_info.py")
        build_helpers.write_build_info(self._build_info_path, info)
        super().build_extensions()

    def run(self):
        super().run()
        # setuptools builds into build_lib and copies only the extensions back
        # for --inplace and editable installs; the build record goes with them.
        built = getattr(self, "_build_info_path", None)
        if built and (self.inplace or getattr(self, "editable_mode", False)):
            shutil.copyfile(built, os.path.join(HERE, "fastcnn", "_build_info.py"))


def extensions():
    # Kernels are reached only through wrappers that validate shapes, dtypes
    # and contiguity, so their bounds checks can go; FASTCNN_DEBUG_CYTHON=1
    # brings them back for test and sanitizer builds.
    checks = build_helpers.env_flag("FASTCNN_DEBUG_CYTHON")
    directives = {
        "language_level": 3,
        "boundscheck": checks,
        "wraparound": checks,
        "initializedcheck": checks,
        "cdivision": True,
        "embedsignature": True,
    }
    exts = [
        Extension(
            "fastcnn." + name,
            ["fastcnn/%s.pyx" % name],
            include_dirs=["src_c"],
            depends=[os.path.join("src_c", f) for f in os.listdir(os.path.join(HERE, "src_c"))],
        )
        for name in KERNEL_MODULES
    ]
    return cythonize(exts, compiler_directives=directives)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
