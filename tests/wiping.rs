//! A sealed bundle leaves no plaintext in freed memory: age's writer copies what it encrypts
//! into a chunk buffer it frees unwiped, and the binary's allocator (src/wipe_alloc.rs,
//! included here) zeroes it. The attack, reading the heap after sealing, is played by a
//! recording allocator under it that looks into every block as it is freed: a block holding
//! the bundle's secret is what a heap reader would find.

#[path = "../src/wipe_alloc.rs"]
#[allow(dead_code)]
mod wipe_alloc;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use claimfab::core::sealed::Recipients;
use claimfab::core::wiping::wiping;

/// Stands for a private key inside a bundle; unlikely anywhere else in the process.
const SECRET: &[u8; 32] = b"-claimfab-test-secret-7f3a9c1e2-";

static FREED_WITH_SECRET: AtomicUsize = AtomicUsize::new(0);

/// The system's allocator, counting the blocks that still hold SECRET when freed.
struct Recorder;

// SAFETY: forwards to System with the same layouts; only reads a block before freeing it.
unsafe impl GlobalAlloc for Recorder {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the block is allocated (and initialised by its user) until freed below.
        let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
        if block.windows(SECRET.len()).any(|w| w == SECRET) {
            FREED_WITH_SECRET.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: wipe_alloc::WipingAllocator<Recorder> = wipe_alloc::WipingAllocator(Recorder);

fn recipients() -> Recipients {
    let identity = age::x25519::Identity::generate();
    Recipients::parse([identity.to_public().to_string().as_str()]).unwrap()
}

/// A bundle-sized plaintext with the secret in it.
fn bundle() -> Vec<u8> {
    let mut bytes = vec![b'z'; 6000];
    bytes[3000..3032].copy_from_slice(SECRET);
    bytes
}

/// Blocks freed holding the secret while `f` runs.
fn freed_with_secret(f: impl FnOnce()) -> usize {
    let before = FREED_WITH_SECRET.load(Ordering::SeqCst);
    f();
    FREED_WITH_SECRET.load(Ordering::SeqCst) - before
}

// One test, so that no other test's thread frees blocks while this one counts.
#[test]
fn sealing_leaves_no_plaintext_in_freed_memory() {
    let recipients = recipients();
    let plaintext = bundle();

    // The attack works on age's writer as it is: its chunk buffer is freed holding the secret.
    let leaked = freed_with_secret(|| {
        let mut sealed = Vec::new();
        let mut writer = recipients.encryptor().wrap_output(&mut sealed).unwrap();
        writer.write_all(&plaintext).unwrap();
        writer.finish().unwrap();
    });
    assert!(
        leaked > 0,
        "age's writer frees the plaintext unwiped (the gap this closes)"
    );

    // Sealing does the same inside `wiping`: nothing freed holds the secret.
    let mut sealed = Vec::new();
    let leaked = freed_with_secret(|| sealed = recipients.seal(&plaintext));
    assert_eq!(leaked, 0, "a freed block still held the bundle's secret");
    assert!(!sealed.is_empty());

    // A reallocation that moves a block under `wiping` wipes the old one too.
    let leaked = freed_with_secret(|| {
        wiping(|| {
            let mut grown = Vec::with_capacity(SECRET.len());
            grown.extend_from_slice(SECRET);
            grown.reserve(1 << 20);
            grown.fill(0);
        })
    });
    assert_eq!(
        leaked, 0,
        "the block a reallocation left behind held the secret"
    );
    drop(plaintext);
}
