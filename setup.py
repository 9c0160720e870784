"""facesift: build face datasets from the open web and learn face representations on them."""
from setuptools import setup
from setuptools.command.build_py import build_py

# One import name, `facesift`; the user's top-level folders stay where they are. `tools/` is the
# package root (the CLI and its commands, the local Flickr server); each stage and the common floor
# are sub-packages mapped onto their own folders (docs/architecture.md).
STAGES = ["common", "curate", "shards", "pretrain", "finetune", "analysis"]
PACKAGE_DIR = {"facesift": "tools", "facesift.commands": "tools/commands",
               **{f"facesift.{name}": name for name in STAGES}}
# Scripts that live in tools/ but are not package code: benchmarks and GPU-session helpers.
NOT_INSTALLED = ("bench_", "gpu_", "checkout")


class BuildPy(build_py):
    """Leave the benchmark and GPU-session scripts in tools/ out of the installed package."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package != "facesift":
            return modules
        return [m for m in modules if not m[1].startswith(NOT_INSTALLED)]


RUNTIME = [
    "torch>=2.1",
    "torchvision>=0.16",
    "numpy>=1.24",
    "pillow>=10.0",
    "requests>=2.28",
    "flickrapi>=2.4",
    "webdataset>=0.2.86,<1.0",  # 0.2.x ships `wids`, which 1.0 dropped
    "imagehash>=4.3",
    "faiss-cpu>=1.7.4",
    "tqdm>=4.60",
    "pyyaml>=6.0",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "tensorboard>=2.14",
    "pandas>=2.0",
    "pyarrow>=12",
    "psutil>=5.9",
    "opencv-python-headless>=4.8",  # face alignment warps (4× faster than PIL's bicubic affine)
]

setup(
    name="facesift",
    version="0.1.0",
    description="Crawl, curate, de-duplicate, pretrain (SwAV) and fine-tune on face datasets from the open web",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    cmdclass={"build_py": BuildPy},
    package_data={"": ["*.yaml"]},
    install_requires=RUNTIME,
    extras_require={
        # facenet-pytorch (the default MTCNN detector) pins an old torch in its metadata:
        # the Makefile installs it with `pip install --no-deps facenet-pytorch==2.6.0`.
        "gpu": ["faiss-gpu", "onnxruntime-gpu", "insightface"],
        "scrfd": ["onnxruntime", "insightface"],
        "test": ["pytest>=7", "pytest-timeout>=2", "pingouin>=0.5"],
    },
    entry_points={"console_scripts": ["facesift=facesift.cli:main"]},
)
