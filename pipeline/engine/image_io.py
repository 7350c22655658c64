"""Image loading for every bundle: 2D raster files in their stored orientation, 3D volumes in
one orientation (RAS by default) whatever their affine.

MONAI's ``PILReader`` returns PNG/JPEG pixels as (width, height) by default
(``reverse_indexing=True``), i.e. transposed with respect to the (row, column) array that was
saved and to what NumPy, scikit-image or another reader gives. Registering a ``PILReader`` with
``reverse_indexing=False`` last makes MONAI's suffix-based reader selection pick it for raster
files, while NIfTI, DICOM and other formats keep their usual readers.
"""

from __future__ import annotations

from monai.data import PILReader
from monai.transforms import Identityd, LoadImaged, Orientationd

# the orientation every 3D volume is brought to (MONAI's Orientationd axis codes)
ORIENTATION = "RAS"


def load_image(keys="image", image_only: bool = True, **kwargs) -> LoadImaged:
    """``LoadImaged`` that keeps 2D raster images as stored: (rows, columns) = (height, width)."""
    loader = LoadImaged(keys, image_only=image_only, **kwargs)
    loader.register(PILReader(reverse_indexing=False))
    return loader


def orient(keys="image", spatial_dims: int = 2, axcodes: str = ORIENTATION):
    """3D volumes: MONAI's ``Orientationd`` to ``axcodes`` (a volume saved with a flipped or
    permuted affine is not loaded mirrored); 2D images keep their stored orientation (identity).

    Raises:
        ValueError: ``axcodes`` that is not three letters for a 3D volume.
    """
    if int(spatial_dims) != 3:
        return Identityd(keys)
    if not (isinstance(axcodes, str) and len(axcodes) == 3):
        raise ValueError(f"orientation must be three axis codes such as 'RAS' or 'LPS', got {axcodes!r}")
    return Orientationd(keys, axcodes=axcodes)
