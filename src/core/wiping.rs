//! When freed memory must be wiped: the switch the binary's allocator reads
//! (`src/wipe_alloc.rs`, which zeroes every block freed, or moved by a reallocation, while
//! it is on). Code that holds keys in its own types wipes them itself (zeroize); this is for
//! buffers it cannot reach, in third-party code that copies a secret and frees the copy
//! unwiped: age's `StreamWriter` keeps the plaintext it encrypts in a 64 KiB chunk buffer
//! that it frees as is (age 0.12), so sealing a bundle would leave its private key behind.
//!
//! Two scopes: [`wipe_every_free`], for the whole process (the commands that hold keys turn
//! it on at start, every thread of theirs included: rayon's too), and [`wiping`], for what
//! one thread does inside a closure (sealing, wherever it is called from).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

static EVERY_FREE: AtomicBool = AtomicBool::new(false);

thread_local! {
    // const-initialised and without a destructor: reading it never allocates, so the
    // allocator itself may read it.
    static WIPING: Cell<bool> = const { Cell::new(false) };
}

/// From now on, every block this process frees is wiped first.
pub fn wipe_every_free() {
    EVERY_FREE.store(true, Ordering::Relaxed);
}

/// Runs `f` with every block this thread frees meanwhile wiped first (nests; restored on
/// unwind too).
pub fn wiping<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            WIPING.with(|w| w.set(self.0));
        }
    }
    let _restore = Restore(WIPING.with(|w| w.replace(true)));
    f()
}

/// Whether a block freed now, on this thread, must be wiped first.
pub fn is_wiping() -> bool {
    EVERY_FREE.load(Ordering::Relaxed) || WIPING.try_with(Cell::get).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_scope_is_set_inside_nests_and_is_restored_on_unwind() {
        assert!(!is_wiping());
        wiping(|| {
            assert!(is_wiping());
            wiping(|| assert!(is_wiping()));
            assert!(is_wiping(), "an inner scope leaves the outer one wiping");
            let other = std::thread::spawn(is_wiping).join().unwrap();
            assert!(!other, "another thread is not in this scope");
        });
        assert!(!is_wiping());
        let unwound = std::panic::catch_unwind(|| wiping(|| panic!("inside")));
        assert!(unwound.is_err());
        assert!(!is_wiping(), "restored after a panic");
    }
}
