//! The argument and environment vectors the kernel put on the initial
//! stack, read in place (nothing is copied: the child's argv is a suffix
//! of ours and its environment is ours).

/// Bytes of a NUL-terminated string, without the NUL.
///
/// # Safety
/// `s` must point to a NUL-terminated string that lives for `'a`.
unsafe fn c_str<'a>(s: *const u8) -> &'a [u8] {
    let mut len = 0;
    // SAFETY: the string is NUL-terminated, so every byte up to and
    // including the NUL is readable.
    while unsafe { *s.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: those len bytes were just read, and live for 'a.
    unsafe { core::slice::from_raw_parts(s, len) }
}

/// `argv`: a NULL-terminated array of NUL-terminated strings.
#[derive(Clone, Copy)]
pub struct Args {
    argv: *const *const u8,
    argc: usize,
}

impl Args {
    /// # Safety
    /// `argv` must hold `argc` pointers to NUL-terminated strings followed
    /// by a NULL pointer, all alive and unchanged for the process lifetime.
    pub unsafe fn from_raw(argc: usize, argv: *const *const u8) -> Args {
        Args { argv, argc }
    }

    pub fn len(&self) -> usize {
        self.argc
    }

    pub fn is_empty(&self) -> bool {
        self.argc == 0
    }

    pub fn get(&self, i: usize) -> Option<&'static [u8]> {
        // SAFETY: i < argc, and from_raw's contract covers the strings.
        (i < self.argc).then(|| unsafe { c_str(*self.argv.add(i)) })
    }

    /// The NULL-terminated vector of arguments `i..` (for execve).
    pub fn tail_ptr(&self, i: usize) -> *const *const u8 {
        // SAFETY: argv has argc + 1 entries, so argv + min(i, argc) is in
        // bounds and the result is NULL-terminated.
        unsafe { self.argv.add(i.min(self.argc)) }
    }

    /// The arguments from index `from` on.
    pub fn iter_from(self, from: usize) -> impl Iterator<Item = &'static [u8]> {
        (from..self.argc).filter_map(move |i| self.get(i))
    }
}

/// `envp`: a NULL-terminated array of `NAME=value` strings.
#[derive(Clone, Copy)]
pub struct Env {
    envp: *const *const u8,
}

impl Env {
    /// # Safety
    /// As for [`Args::from_raw`], with the NULL pointer marking the end.
    pub unsafe fn from_raw(envp: *const *const u8) -> Env {
        Env { envp }
    }

    pub fn as_ptr(&self) -> *const *const u8 {
        self.envp
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &[u8]) -> Option<&'static [u8]> {
        let mut p = self.envp;
        loop {
            // SAFETY: p stays within the NULL-terminated array: it only
            // advances past non-NULL entries.
            let entry = unsafe { *p };
            if entry.is_null() {
                return None;
            }
            // SAFETY: non-NULL entries are NUL-terminated strings.
            let s = unsafe { c_str(entry) };
            if let Some(value) = s
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(b"="))
            {
                return Some(value);
            }
            // SAFETY: entry was not the terminating NULL.
            p = unsafe { p.add(1) };
        }
    }
}

/// An empty environment, for tests.
#[cfg(test)]
pub fn empty_env() -> Env {
    static NULL: [usize; 1] = [0];
    Env {
        envp: NULL.as_ptr() as *const *const u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr::null;

    #[test]
    fn reads_argv_and_envp_in_place() {
        let strings: [&[u8]; 4] = [b"init\0", b"sh\0", b"PATH=/bin:/x\0", b"PATHX=no\0"];
        let argv = [strings[0].as_ptr(), strings[1].as_ptr(), null()];
        let envp = [strings[3].as_ptr(), strings[2].as_ptr(), null()];
        // SAFETY: the arrays are NULL-terminated and outlive the test.
        let (args, env) = unsafe {
            (
                Args::from_raw(2, argv.as_ptr()),
                Env::from_raw(envp.as_ptr()),
            )
        };
        assert_eq!(args.get(1), Some(&b"sh"[..]));
        assert_eq!(args.get(2), None);
        assert_eq!(args.iter_from(1).count(), 1);
        // SAFETY: tail_ptr(1) points into argv.
        assert!(unsafe { *args.tail_ptr(5) }.is_null());
        assert_eq!(env.get(b"PATH"), Some(&b"/bin:/x"[..]));
        assert_eq!(env.get(b"HOME"), None);
        assert_eq!(empty_env().get(b"PATH"), None);
    }
}
