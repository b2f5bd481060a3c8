//! argon2's working memory as infrastructure: where its 19 MiB live (a huge-page-backed
//! mapping on Linux, else the heap), how they are reused between calls, and how they go back to
//! the system. The password rules and the hashing threads are `accounts::passwords`.

use argon2::Block;

/// argon2's working memory (19 MiB at the default parameters), kept between calls.
///
/// argon2 reads its blocks in a data-dependent, scattered order, so with 4 KiB pages nearly
/// every block it reads costs a TLB miss (19 MiB is ~4 900 pages, far more than the TLB holds),
/// and in a virtual machine each miss is a two-level page walk. On Linux the memory is its own
/// anonymous mapping, aligned to 2 MiB and marked `MADV_HUGEPAGE`, so the kernel backs it with
/// ten 2 MiB pages where it can (the default transparent-huge-page mode, `madvise`, does this
/// only for memory that asks). Elsewhere, or if the mapping fails, a plain heap allocation.
pub struct WorkingMemory {
    blocks: Option<Blocks>,
}

enum Blocks {
    Heap(Vec<Block>),
    #[cfg(target_os = "linux")]
    Mapped(mapped::Mapping),
}

impl Blocks {
    /// `count` zero-initialised blocks: a mapping where there can be one, else the heap.
    fn new(count: usize) -> Self {
        #[cfg(target_os = "linux")]
        if let Some(m) = mapped::Mapping::new(count) {
            return Self::Mapped(m);
        }
        Self::Heap(vec![Block::new(); count])
    }

    fn as_mut_slice(&mut self) -> &mut [Block] {
        match self {
            Self::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Self::Mapped(m) => m.as_mut_slice(),
        }
    }
}

impl WorkingMemory {
    pub const fn new() -> Self {
        Self { blocks: None }
    }

    /// `count` zero-initialised or previously used blocks.
    pub fn blocks(&mut self, count: usize) -> &mut [Block] {
        if let Some(b) = &mut self.blocks
            && b.as_mut_slice().len() < count
        {
            self.blocks = None;
        }
        let blocks = self.blocks.get_or_insert_with(|| Blocks::new(count));
        &mut blocks.as_mut_slice()[..count]
    }

    /// Gives the memory back to the system; true when there was some.
    pub fn release(&mut self) -> bool {
        match self.blocks.take() {
            None => false,
            Some(Blocks::Heap(v)) => {
                drop(v);
                give_back_freed_memory();
                true
            }
            #[cfg(target_os = "linux")]
            Some(Blocks::Mapped(_)) => true,
        }
    }
}

impl Default for WorkingMemory {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(target_os = "linux")]
mod mapped {
    use argon2::Block;

    const HUGE_PAGE: usize = 2 << 20;

    /// An anonymous private mapping holding `len` blocks, its start aligned to 2 MiB.
    pub struct Mapping {
        /// The whole mapping as returned by mmap (alignment slack included), for munmap.
        base: *mut libc::c_void,
        size: usize,
        blocks: *mut Block,
        len: usize,
    }

    // SAFETY: the mapping is owned by this value alone and only reached through `&mut self`.
    unsafe impl Send for Mapping {}

    impl Mapping {
        pub fn new(len: usize) -> Option<Self> {
            let bytes = len.checked_mul(size_of::<Block>())?;
            let size = bytes.checked_add(HUGE_PAGE)?;
            // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return None;
            }
            let offset = (HUGE_PAGE - (base as usize) % HUGE_PAGE) % HUGE_PAGE;
            // SAFETY: offset < HUGE_PAGE, so [start, start + bytes) lies inside the mapping.
            let start = unsafe { base.cast::<u8>().add(offset) };
            // SAFETY: advice on memory this mapping owns; a kernel without transparent huge
            // pages refuses it and the memory simply stays in 4 KiB pages.
            unsafe {
                libc::madvise(start.cast(), bytes, libc::MADV_HUGEPAGE);
            }
            Some(Self {
                base,
                size,
                blocks: start.cast(),
                len,
            })
        }

        pub fn as_mut_slice(&mut self) -> &mut [Block] {
            // SAFETY: `blocks` is aligned to 2 MiB (more than Block's 64), points at `len`
            // blocks of this mapping, which the kernel zero-filled; a Block is plain u64s, so
            // any bytes are a valid Block; `&mut self` makes the slice the only reference.
            unsafe { std::slice::from_raw_parts_mut(self.blocks, self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping made in `new`, no longer referenced.
            unsafe {
                libc::munmap(self.base, self.size);
            }
        }
    }
}

/// Asks the allocator to return freed pages to the system: glibc keeps a freed 19 MiB block in
/// its arena otherwise, and the process's footprint would never shrink. Only heap-allocated
/// working memory needs it; a mapping goes back to the system when it is unmapped.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
