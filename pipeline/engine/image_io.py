"""Image loading for every bundle: 2D raster files in their stored orientation.

MONAI's ``PILReader`` returns PNG/JPEG pixels as (width, height) by default
(``reverse_indexing=True``), i.e. transposed with respect to the (row, column) array that was
saved and to what NumPy, scikit-image or another reader gives. Registering a ``PILReader`` with
``reverse_indexing=False`` last makes MONAI's suffix-based reader selection pick it for raster
files, while NIfTI, DICOM and other formats keep their usual readers.
"""

from __future__ import annotations

from monai.data import PILReader
from monai.transforms import LoadImaged


def load_image(keys="image", image_only: bool = True, **kwargs) -> LoadImaged:
    """``LoadImaged`` that keeps 2D raster images as stored: (rows, columns) = (height, width)."""
    loader = LoadImaged(keys, image_only=image_only, **kwargs)
    loader.register(PILReader(reverse_indexing=False))
    return loader
