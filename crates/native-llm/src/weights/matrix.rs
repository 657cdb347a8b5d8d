//! A weight matrix and the memory behind it: a view into a memory-mapped model file, rows
//! converted in memory, or groups of rows repacked into anonymous memory for the multi-row
//! kernels.

use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::{self, WeightKind};

pub(super) enum Bytes {
    /// A range of the mapped file.
    Mapped { map: Arc<Mmap>, start: usize },
    /// Converted in memory.
    Owned(Vec<u8>),
    /// Repacked into anonymous memory (huge pages where the kernel grants them).
    Anon(memmap2::MmapMut),
}

/// A 2-D weight matrix: rows in GGUF block layout (mapped from the file), or groups of rows
/// interleaved for the multi-row kernels ([`kernels::interleave`]: 8 rows of `Q4_0`, `Q4_1`,
/// `Q8_0`; 16 rows of `Q4_K` on AVX-512 CPUs; 4 float rows).
#[derive(Clone)]
pub struct Matrix {
    /// Storage format.
    pub kind: WeightKind,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    pub(super) data: Arc<Bytes>,
    pub(super) row_bytes: usize,
    /// Stored as interleaved groups of `kernels::group_rows(kind, cols)` rows.
    pub interleaved: bool,
}

impl Matrix {
    fn all(&self) -> &[u8] {
        match &*self.data {
            Bytes::Mapped { map, start } => &map[*start..*start + self.rows * self.row_bytes],
            Bytes::Owned(v) => v,
            Bytes::Anon(m) => m,
        }
    }

    /// The bytes of row `r` (row layout only).
    #[inline]
    pub fn row(&self, r: usize) -> &[u8] {
        debug_assert!(!self.interleaved);
        &self.all()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The bytes of rows `r..r + n`: those rows in row layout, or, interleaved, the groups
    /// that hold them (`r` and `n` multiples of the group size).
    #[inline]
    pub fn rows(&self, r: usize, n: usize) -> &[u8] {
        debug_assert!(
            !self.interleaved
                || (r.is_multiple_of(self.group_rows()) && n.is_multiple_of(self.group_rows()))
        );
        &self.all()[r * self.row_bytes..(r + n) * self.row_bytes]
    }

    /// Rows per interleaved group.
    pub fn group_rows(&self) -> usize {
        kernels::group_rows(self.kind, self.cols).unwrap_or(1)
    }

    /// The bytes of interleaved group `g`.
    #[inline]
    pub fn group(&self, g: usize) -> &[u8] {
        let gb = self.row_bytes * self.group_rows();
        &self.all()[g * gb..(g + 1) * gb]
    }

    /// Row `r` as f32 (embedding lookups), whatever the layout.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        if self.interleaved {
            let n = self.group_rows();
            kernels::dequantize_group_row(self.kind, self.group(r / n), r % n, self.cols, out);
        } else {
            kernels::dequantize_row(self.kind, self.row(r), out);
        }
    }

    /// Bytes the matrix occupies (a `Q4_K` matrix repacked into groups: 2.8% more than in
    /// the file).
    pub fn bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// This matrix repacked for the multi-row kernels when its format and shape allow;
    /// otherwise itself.
    pub fn for_kernels(self) -> Matrix {
        let Some(n) = kernels::group_rows(self.kind, self.cols) else {
            return self;
        };
        // An empty matrix (a zero dimension in a malformed file) has nothing to repack.
        if !self.rows.is_multiple_of(n) || self.interleaved || self.rows * self.cols == 0 {
            return self;
        }
        let (gb_in, gb_out) = (
            self.row_bytes * n,
            kernels::group_bytes(self.kind, self.cols),
        );
        let src = self.all();
        // In parallel (loading runs inside the engine's thread pool): repacking is most of
        // the load time.
        let fill = |packed: &mut [u8]| {
            packed
                .par_chunks_mut(gb_out)
                .zip(src.par_chunks_exact(gb_in))
                .for_each(|(out, g)| kernels::repack_group(self.kind, g, self.cols, out));
        };
        let data = anon_filled(self.rows / n * gb_out, fill);
        if let Bytes::Mapped { map, start } = &*self.data {
            release(map, *start, src.len());
        }
        Matrix {
            data: Arc::new(data),
            interleaved: true,
            row_bytes: gb_out / n,
            ..self
        }
    }
}

/// `len` bytes of anonymous memory asking for transparent huge pages (2 MiB page faults
/// while filling, fewer TLB misses while streaming the weights), filled by `fill`; a `Vec`
/// if mapping fails.
pub(super) fn anon_filled(len: usize, fill: impl FnOnce(&mut [u8])) -> Bytes {
    match memmap2::MmapMut::map_anon(len) {
        Ok(mut m) => {
            #[cfg(unix)]
            let _ = m.advise(memmap2::Advice::HugePage);
            fill(&mut m);
            Bytes::Anon(m)
        }
        Err(_) => {
            let mut v = vec![0u8; len];
            fill(&mut v);
            Bytes::Owned(v)
        }
    }
}

/// The model file at `path`, mapped read-only and populated up front (every byte is read by
/// the header parse or the repacking right after).
pub fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open ({e})")))?;
    // SAFETY: the file is mapped read-only; like every mmap-based loader (llama.cpp,
    // safetensors) this assumes nobody truncates the model file while it is loaded.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
        .map_err(|e| Error::file(path, format!("cannot be memory-mapped ({e})")))?;
    Ok(Arc::new(map))
}

/// Drops the process's pages of a range of the mapped file that has been copied (repacked or
/// transcoded) and is never read again, so the model is not resident twice. The file stays
/// in the page cache; a page shared with a neighbouring tensor is simply read again on use.
pub(super) fn release(map: &Mmap, start: usize, len: usize) {
    #[cfg(unix)]
    // SAFETY: the mapping is read-only and file-backed, so MADV_DONTNEED only drops this
    // process's page table entries: a later access re-reads the same bytes from the file. It
    // cannot change any byte another reference sees.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
    #[cfg(not(unix))]
    let _ = (map, start, len);
}

impl Matrix {
    /// A matrix owning `data` (row-major rows of `kind`).
    pub fn owned(kind: WeightKind, rows: usize, cols: usize, data: Vec<u8>) -> Matrix {
        debug_assert_eq!(data.len(), kind.row_bytes(cols) * rows);
        Matrix {
            kind,
            rows,
            cols,
            data: Arc::new(Bytes::Owned(data)),
            row_bytes: kind.row_bytes(cols),
            interleaved: false,
        }
    }
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Matrix({} {}x{})",
            self.kind.name(),
            self.rows,
            self.cols
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_matrix_is_left_as_it_is() {
        for kind in [
            WeightKind::Q4_K,
            WeightKind::Q6_K,
            WeightKind::Q8_0,
            WeightKind::F32,
        ] {
            for (rows, cols) in [(16, 0), (0, 256)] {
                let m = Matrix::owned(kind, rows, cols, Vec::new()).for_kernels();
                assert!(!m.interleaved && m.bytes() == 0, "{kind:?} {rows}x{cols}");
            }
        }
    }
}
