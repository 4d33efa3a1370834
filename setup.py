from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open('lors_det/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='lors_det',
    version=read_version(),
    description='AdaMixer, LORS, VeRA and CondLoRA as an MMDetection 3.x plugin',
    packages=find_packages(include=['lors_det', 'lors_det.*']),
    python_requires='>=3.8',
    # Dependencies are pinned in requirements/constraints.txt and installed by tools/setup_env.sh;
    # GPU-cluster users bring their own CUDA torch + mmcv (see README).
    install_requires=[],
)
