//! The binary's allocator: the system's (or any inner one), except that a block freed, or
//! moved by a reallocation, while `claimfab::core::wiping::is_wiping()` is zeroed first
//! (see that module for when and why). A module of the binary, like harden.rs: the library
//! forbids unsafe code. tests/wiping.rs includes this file to check it on a recording
//! allocator.

use std::alloc::{GlobalAlloc, Layout};

use claimfab::core::wiping::is_wiping;
use zeroize::Zeroize;

/// `inner`'s allocator, zeroing what it frees while wiping is on.
pub struct WipingAllocator<A>(pub A);

/// Zeroes `size` bytes at `ptr` in a way the compiler keeps.
///
/// # Safety
/// `ptr` must be valid for writes of `size` bytes.
unsafe fn wipe(ptr: *mut u8, size: usize) {
    // SAFETY: the caller's guarantee.
    unsafe { std::slice::from_raw_parts_mut(ptr, size) }.zeroize();
}

// SAFETY: every call is passed to the inner allocator with the layouts it was given; a
// block is written to (zeroed) only while it is still allocated.
unsafe impl<A: GlobalAlloc> GlobalAlloc for WipingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_wiping() {
            // SAFETY: the block is allocated with `layout` until the call below.
            unsafe { wipe(ptr, layout.size()) };
        }
        // SAFETY: forwarded as is.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_wiping() {
            // SAFETY: forwarded as is.
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        // The inner realloc may move the block and free the old one unwiped: move it here.
        // SAFETY: realloc's contract makes new_size with this alignment a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: new_size is non-zero (realloc's contract).
        let new = unsafe { self.0.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are allocated and distinct; the old one is wiped while it
            // still is, then freed with its own layout.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                wipe(ptr, layout.size());
                self.0.dealloc(ptr, layout);
            }
        }
        new
    }
}
