"""Images in: named IDX datasets, defect-dataset folders and the user's own files, as one
:class:`Dataset`; image collections read batch by batch; the one rule for what counts as
images and the one home of fitting them to a size.

Modules, from the floor up: ``_images`` (what counts as images, stored dtype, float batches),
``_sampling`` (the seeded stratified sample), ``_prepare`` (grey conversion, resizing, fitting
an image to a detector's shape), ``_folders`` / ``_idx`` / ``_download`` (files), ``_dataset``
(the :class:`Dataset` record), ``_sources`` (mnist, fashion-mnist, kmnist), ``_user`` (the
user's npz/npy/CSV/folders), ``_mvtec`` (defect datasets with masks, read and written),
``_collections`` (inputs read batch by batch, with stable ids), ``_rows`` (images left on
disk, selected by row), ``_streamed`` (``data.stream``), ``_load`` (:func:`load_dataset`),
``_synthetic_defects`` (the generated texture-defect benchmark, family 1: colour patches of
photographed textures), ``_grey_defects`` (family 2, for testing only: procedural grey
textures with their own defect kinds).
"""

from reconad.data._collections import (
    DEFAULT_BATCH,
    ArrayCollection,
    Batch,
    Collection,
    FileCollection,
    ParquetCollection,
    iter_batches,
    load_ahead,
    open_collection,
)
from reconad.data._dataset import Dataset
from reconad.data._download import MirrorsUnreachable, download, file_md5s
from reconad.data._folders import FORMATS, IMAGE_SUFFIXES, list_image_folder, read_image
from reconad.data._grey_defects import (
    GREY_DEFECT_KINDS,
    GREY_TEXTURES,
    add_grey_defect,
    grey_patches,
    make_grey_defect_dataset,
)
from reconad.data._idx import is_gzip, parse_idx, read_idx, read_idx_bytes
from reconad.data._images import as_images, float_batch, stored_images
from reconad.data._load import load_dataset, split_indices
from reconad.data._mvtec import (
    NORMAL_KIND,
    DefectDataset,
    is_defect_layout,
    read_defect_dataset,
    write_defect_dataset,
)
from reconad.data._prepare import (
    LUMA,
    fit_channels,
    fit_folder_images,
    fit_image,
    prepare,
    prepare_changes,
)
from reconad.data._rows import ImageRows, decoded_bytes, memory_budget
from reconad.data._sampling import stratified_sample
from reconad.data._sources import (
    SOURCES,
    ensure_files,
    find_files,
    load_named,
    search_dirs,
)
from reconad.data._streamed import open_streamed, should_stream
from reconad.data._synthetic_defects import (
    DEFECT_KINDS,
    TEXTURES,
    TRAIN_ROWS,
    add_defect,
    make_defect_dataset,
    random_patches,
    texture_image,
)
from reconad.data._user import (
    UserImages,
    encode_labels,
    load_images,
    load_user,
    names_to_indices,
    read_raw_arrays,
    to_nchw,
)

__all__ = [
    "DEFAULT_BATCH", "DEFECT_KINDS", "FORMATS", "GREY_DEFECT_KINDS", "GREY_TEXTURES",
    "IMAGE_SUFFIXES", "LUMA", "NORMAL_KIND", "SOURCES", "TEXTURES", "TRAIN_ROWS", "ArrayCollection",
    "Batch", "Collection", "Dataset", "DefectDataset", "FileCollection", "ImageRows",
    "MirrorsUnreachable", "ParquetCollection", "UserImages", "add_defect", "add_grey_defect",
    "as_images", "decoded_bytes", "download", "encode_labels", "ensure_files", "file_md5s",
    "find_files", "fit_channels", "fit_folder_images", "fit_image", "float_batch", "grey_patches",
    "is_defect_layout", "is_gzip", "iter_batches", "list_image_folder", "load_ahead",
    "load_dataset", "load_images", "load_named", "load_user", "make_defect_dataset",
    "make_grey_defect_dataset", "memory_budget", "names_to_indices", "open_collection",
    "open_streamed", "parse_idx", "prepare", "prepare_changes", "random_patches",
    "read_defect_dataset", "read_idx", "read_idx_bytes", "read_image", "read_raw_arrays",
    "search_dirs", "should_stream", "split_indices", "stored_images", "stratified_sample",
    "texture_image", "to_nchw", "write_defect_dataset",
]
