"""smartbin: a garbage classifier for a real sorting bin (train, convert, run on the device)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = next(
    line.split('"')[1]
    for line in (HERE / "edge" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

# Lower bounds are the versions the test suite ran with.
DEVICE = [  # what every device needs but OpenCV, which a Jetson takes from JetPack (GStreamer for csi://)
    "numpy>=1.24",
    "paho-mqtt>=2.0,<3",
    "ai-edge-litert>=2.3.0; platform_machine in 'x86_64 aarch64 AMD64 arm64'",
    "pyyaml>=6.0",
    "pydantic>=2.6,<3",
    "prometheus-client>=0.20",
    "cryptography>=41",  # ed25519 signatures of over-the-air bundles
]
EDGE = DEVICE + ["opencv-python-headless>=4.8"]
ONNX = ["onnxruntime>=1.16"]  # the ONNX variants' runtime (install.sh adds it when the config runs one)
TRAIN = [
    "tensorflow>=2.21.0; platform_machine != 'x86_64'",  # arm64 workstations: the one build there is
    "keras>=3.10",
    "onnx>=1.17",
    "tf2onnx>=1.17",
    "onnxruntime>=1.32",  # quantize_static's calibration cache (one calibration per method in a search)
    "matplotlib>=3.8",
    "rich>=13.0",  # progress and tables on the workstation; the device's bench prints plain text
]
EXTRAS = {
    "edge": EDGE,
    "pi": EDGE + ["picamera2>=0.3.12", "gpiozero>=2.0"],
    # OpenCV and the GPU build of ONNX Runtime come from JetPack and NVIDIA's wheel (a pip OpenCV has no GStreamer);
    # JetPack's OpenCV is built for numpy 1.x, which numpy 2 cannot load: the venv keeps 1.x
    "jetson": DEVICE + ONNX + ["numpy<2"],
    "onnx": ONNX,
    # the workstation: CPU TensorFlow (what CI tests) or, on Linux with an NVIDIA GPU, TensorFlow with
    # its CUDA libraries from pip (`pip install "smartbin[train-gpu]"`; the two are alternatives)
    "train": EDGE + ["tensorflow-cpu>=2.21.0; platform_machine == 'x86_64'", *TRAIN],
    "train-gpu": EDGE + ["tensorflow[and-cuda]>=2.21.0; platform_system == 'Linux'", *TRAIN],
    "dev": [
        "pytest>=8.0",
        "pytest-timeout>=2.3",
        "pytest-xdist>=3.6",  # make test runs the suite in parallel workers (--no-loadscope-reorder: 3.6)
        "hypothesis>=6.100",
        "ruff>=0.6",
        "jsonschema>=4.20",
        "gpiozero>=2.0",
        "amqtt>=0.11",
        "selenium>=4.20",
        "scikit-learn>=1.4",  # its bundled copy of the UCI handwritten digits: real images for the quantization test
        "scikit-image>=0.22",  # its bundled photographs (textures, scenes): the second real image set
    ],
}

setup(
    name="smartbin",
    version=VERSION,
    description="Garbage classification for a smart sorting bin: ResNet training, TFLite/ONNX export, MQTT daemon",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",  # TensorFlow 2.21 and LiteRT's wheels; install.sh reads it
    packages=find_packages(include=["edge", "edge.*", "convert", "convert.*"]),
    package_data={"edge": ["schemas/*.json"]},
    data_files=[
        ("share/smartbin/firmware_config", [str(p) for p in sorted(Path("firmware_config").glob("*")) if p.is_file()])
    ],
    install_requires=[],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": ["smartbin=edge.cli:main"],  # the device's side; the workstation's commands join it:
        "smartbin.commands": ["workstation=convert.commands.cli:register"],
    },
)
