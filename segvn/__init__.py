"""segvn: semantic segmentation of street-scene videos.

Importing the package registers the ``segvn.repo_dir`` config resolver (the repository folder),
so ``conf/paths`` can find ``../shared`` beside the repository wherever a command is started.
"""

from pathlib import Path

from omegaconf import OmegaConf

REPO_DIR = Path(__file__).resolve().parents[1]

if not OmegaConf.has_resolver("segvn.repo_dir"):
    OmegaConf.register_new_resolver("segvn.repo_dir", lambda: str(REPO_DIR))
