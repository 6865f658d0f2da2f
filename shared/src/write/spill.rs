//! The spill store ([`Spill`]): where the partitioned writer's finished pages wait for
//! their row group to be flushed.

use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::arrow_writer::{PageKey, PageStore, PageStoreArgs, PageStoreFactory};

use crate::{Error, Result};

/// Compressed pages a chunk keeps on the heap while they wait for their row group to be
/// flushed; the pages past it wait in the spill file. A 64 MiB chunk of TPC-H lineitem
/// writes about 18 MB: writing it to the spill file and reading it back cost about 7 % of
/// the job's CPU time.
pub const PAGE_MEMORY_BYTES: usize = 16 * 1024 * 1024;

/// Where the finished pages of a chunk's open files wait for their row group to be
/// flushed: the first [`PAGE_MEMORY_BYTES`] on the heap, the rest in one spill file in
/// the chunk's staging folder, so a worker's memory does not grow with its row groups.
/// Pages go back in the order the writer asks; the file is emptied whenever no page in it
/// is still waiting, and holds at most the chunk's compressed output. One file per chunk,
/// not per open file: a chunk already keeps up to
/// [`MAX_OPEN_FILES`](super::MAX_OPEN_FILES) descriptors open.
/// Where a page waits never changes the bytes written.
#[derive(Debug)]
pub(super) struct Spill {
    inner: std::sync::Mutex<SpillFile>,
    pub(super) path: std::path::PathBuf,
}

#[derive(Debug)]
pub(super) struct SpillFile {
    file: std::fs::File,
    pub(super) end: u64,
    /// Pages put in the file and not yet taken (or released).
    pub(super) held: usize,
    /// Bytes of the pages waiting on the heap, and how many may.
    pub(super) memory: usize,
    pub(super) memory_limit: usize,
}

impl Spill {
    pub(super) fn create(path: std::path::PathBuf) -> Result<Arc<Spill>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::Staging {
                context: format!("creating {}", path.display()),
                source: e,
            })?;
        Ok(Arc::new(Spill {
            inner: std::sync::Mutex::new(SpillFile {
                file,
                end: 0,
                held: 0,
                memory: 0,
                memory_limit: PAGE_MEMORY_BYTES,
            }),
            path,
        }))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SpillFile> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> parquet::errors::ParquetError {
        parquet::errors::ParquetError::External(Box::new(std::io::Error::new(
            e.kind(),
            format!("{what} the spill file {}: {e}", self.path.display()),
        )))
    }
}

impl SpillFile {
    /// One page fewer is waiting; with none left the file starts over, empty.
    fn release(&mut self, spill: &Spill) -> parquet::errors::Result<()> {
        self.held = self.held.saturating_sub(1);
        if self.held == 0 && self.end > 0 {
            self.file
                .set_len(0)
                .map_err(|e| spill.io_error("emptying", e))?;
            self.end = 0;
        }
        Ok(())
    }
}

/// Where one page waits.
enum Waiting {
    Heap(Bytes),
    /// (offset, length) in the spill file.
    File(u64, usize),
}

/// One column chunk's pages in the chunk's [`Spill`].
pub(super) struct SpilledPages {
    pub(super) spill: Arc<Spill>,
    /// Each page put, by key; `None` once taken.
    pages: Vec<Option<Waiting>>,
}

impl SpilledPages {
    /// A column chunk's view of `spill`, with no page put yet.
    pub(super) fn new(spill: Arc<Spill>) -> SpilledPages {
        SpilledPages {
            spill,
            pages: Vec::new(),
        }
    }
}

impl PageStore for SpilledPages {
    fn put(&mut self, value: Bytes) -> parquet::errors::Result<PageKey> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = self.spill.lock();
        let len = value.len();
        if f.memory + len <= f.memory_limit {
            // A copy: the writer's buffer may be larger than the page (a page header's
            // is 1 KiB), and the memory counted must be the memory held.
            f.memory += len;
            self.pages
                .push(Some(Waiting::Heap(Bytes::copy_from_slice(&value))));
        } else {
            let at = f.end;
            f.file
                .seek(SeekFrom::Start(at))
                .and_then(|_| f.file.write_all(&value))
                .map_err(|e| self.spill.io_error("writing to", e))?;
            self.pages.push(Some(Waiting::File(at, len)));
            f.end += len as u64;
            f.held += 1;
        }
        Ok(PageKey::new(self.pages.len() as u64 - 1))
    }

    fn take(&mut self, key: PageKey) -> parquet::errors::Result<Bytes> {
        use std::io::{Read, Seek, SeekFrom};
        let page = self
            .pages
            .get_mut(key.get() as usize)
            .and_then(Option::take)
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "page {} of a column chunk is not among the pages waiting (spill file {})",
                    key.get(),
                    self.spill.path.display()
                ))
            })?;
        let mut f = self.spill.lock();
        match page {
            Waiting::Heap(b) => {
                f.memory -= b.len();
                Ok(b)
            }
            Waiting::File(offset, len) => {
                let mut buf = vec![0u8; len];
                f.file
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| f.file.read_exact(&mut buf))
                    .map_err(|e| self.spill.io_error("reading", e))?;
                f.release(&self.spill)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

impl Drop for SpilledPages {
    /// A column chunk dropped before its pages were taken (a failed write) gives them up,
    /// so the spill file can still be emptied and the heap budget used again.
    fn drop(&mut self) {
        if self.pages.iter().all(Option::is_none) {
            return;
        }
        let mut f = self.spill.lock();
        for page in self.pages.iter_mut().filter_map(Option::take) {
            match page {
                Waiting::Heap(b) => f.memory -= b.len(),
                Waiting::File(..) => {
                    let _ = f.release(&self.spill);
                }
            }
        }
    }
}

/// Hands each column chunk of a chunk's files a view of the chunk's [`Spill`].
#[derive(Debug)]
pub(super) struct SpillFactory(pub(super) Arc<Spill>);

impl PageStoreFactory for SpillFactory {
    fn create(&self, _args: &PageStoreArgs<'_>) -> parquet::errors::Result<Box<dyn PageStore>> {
        Ok(Box::new(SpilledPages::new(self.0.clone())))
    }
}
