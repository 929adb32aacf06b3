from pathlib import Path

import pytest

from tests.model_training.photos import write_photos


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """Four generated photos written as real PNG files, as a source folder would hold them."""
    return write_photos(tmp_path / "photos")
