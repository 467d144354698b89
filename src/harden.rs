//! Process hardening for the commands that hold private keys (claim keys, a station's
//! identity, the batch-signing key): no core dump may carry a key to disk. A module of the
//! binary, not of the library: it is claimfab's only unsafe code (two libc calls), and the
//! library forbids unsafe code.

use std::io;

/// Sets this process's core-file size limit to zero (soft and hard, so nothing in the
/// process can raise it again) and, on Linux, makes it non-dumpable: a crash then writes no
/// core file holding a key, a `core_pattern` pipe gets no dump, and other processes of the
/// same user can neither ptrace it nor read its memory through /proc.
pub fn no_core_dumps() -> io::Result<()> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the struct passed by reference, which outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(io::Error::last_os_error());
    }
    not_dumpable()
}

/// PR_SET_DUMPABLE 0: besides the core limit, it also covers a `core_pattern` that pipes
/// dumps to a program (which ignores RLIMIT_CORE) and /proc/PID/mem readers.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn not_dumpable() -> io::Result<()> {
    const NOT_DUMPABLE: libc::c_ulong = 0;
    // SAFETY: PR_SET_DUMPABLE takes one integer argument; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, NOT_DUMPABLE, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Elsewhere the core-file limit is what there is.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn not_dumpable() -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The binary's test harness runs only this module's tests, so hardening the test
    /// process itself affects no other test. tests/hardening.rs checks a running claimfab
    /// command from outside (its /proc/PID/limits).
    #[test]
    fn afterwards_the_process_is_not_dumpable_and_dumps_no_core() {
        super::no_core_dumps().unwrap();
        // SAFETY: PR_GET_DUMPABLE takes no argument and returns the flag.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        assert_eq!(dumpable, 0, "PR_GET_DUMPABLE after no_core_dumps");
        let mut limit = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: getrlimit writes the struct passed by reference, which outlives the call.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) }, 0);
        assert_eq!((limit.rlim_cur, limit.rlim_max), (0, 0));
        // Called again (two key-holding steps in one process): still fine.
        super::no_core_dumps().unwrap();
    }
}
