"""Feature matrices <-> Arrow fixed-size-list columns.

Features are stored as one ``fixed_size_list<float32>[dim]`` column, so a consumer turns a whole
Parquet table into one (rows, dim) matrix in a single step, without per-sample file I/O.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def to_vector_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A (rows, dim) float32 matrix as one Arrow array, sharing the matrix's memory."""
    if matrix.ndim != 2:
        raise ValueError(f"feature matrix must be 2-d, got shape {matrix.shape}")
    flat = np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), matrix.shape[1])


def vector_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The (rows, dim) float32 matrix of a fixed-size-list column (what training reads)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_list(array.type):
        raise TypeError(f"expected a fixed_size_list column, got {array.type}")
    if array.null_count:
        raise ValueError(f"feature column has {array.null_count} null vectors")
    dim = array.type.list_size
    values = array.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(len(array), dim)
