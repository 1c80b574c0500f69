//! seccomp profiles from linux.seccomp: rules bite, other syscalls work,
//! exec'd processes are filtered too, and bad profiles are refused.

use hako_tests::{json, unique, Bundle, Runtime};

fn with_profile(args: &[&str], profile: hako_tests::Value, nnp: bool) -> Bundle {
    let mut b = Bundle::new(args);
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["noNewPrivileges"] = json!(nnp);
        c["linux"]["seccomp"] = profile;
    });
    b
}

#[test]
fn errno_rule_bites_and_other_syscalls_work() {
    let rt = Runtime::new();
    for nnp in [true, false] {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat", "not_a_real_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        });
        let b = with_profile(
            &["sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/blocked 2>/dev/null; echo mkdir=$?; echo hi > /tmp/f && cat /tmp/f"],
            profile,
            nnp,
        );
        let (code, out, err) = rt.run_bundle(&b, &unique("sc"));
        assert_eq!(code, 0, "nnp={nnp}: {err}");
        // The filter must not turn on no_new_privs behind the config's back.
        let want = format!("NoNewPrivs:\t{}\nSeccomp:\t2\nmkdir=1\nhi\n", u8::from(nnp));
        assert_eq!(out, want, "nnp={nnp}");
        assert!(!b.rootfs().join("tmp/blocked").exists());
    }
}

#[test]
fn argument_filters_and_default_errno() {
    let rt = Runtime::new();
    // Deny everything but what sh needs? Simpler: default allow, and block
    // personality(0xffffffff query) only when arg0 equals a given value.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    // kill -USR1 (10) is refused, kill -0 (signal 0) works.
    let b = with_profile(
        &[
            "sh",
            "-c",
            "kill -0 $$; echo zero=$?; kill -USR1 $$ 2>/dev/null; echo usr1=$?",
        ],
        profile,
        true,
    );
    let (code, out, err) = rt.run_bundle(&b, &unique("scarg"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "zero=0\nusr1=1\n");
}

#[test]
fn kill_action_kills_the_process() {
    let rt = Runtime::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]
    });
    let b = with_profile(
        &["sh", "-c", "echo before; echo $PPID"],
        profile.clone(),
        true,
    );
    // busybox sh calls getppid at start-up: the shell dies with SIGSYS.
    let (code, out, _) = rt.run_bundle(&b, &unique("sckill"));
    assert_eq!(code, 128 + libc::SIGSYS, "out: {out}");
    let b = with_profile(&["true"], profile, true);
    let (code, _, err) = rt.run_bundle(&b, &unique("scok"));
    assert_eq!(
        code, 0,
        "a process that does not call the syscall runs: {err}"
    );
}

#[test]
fn exec_processes_get_the_filter() {
    let rt = Runtime::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    let b = with_profile(&["sleep", "100"], profile, true);
    let id = unique("scexec");
    rt.ok(&["run", "-d", "--bundle", &b.path().to_string_lossy(), &id]);
    let out = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "mkdir /tmp/d 2>/dev/null; echo $?; grep '^Seccomp:' /proc/self/status",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\nSeccomp:\t2\n");
    rt.ok(&["delete", "-f", &id]);
}

#[test]
fn malformed_profiles_are_refused() {
    let rt = Runtime::new();
    let bad = [
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
               "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
        json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/nonexistent.sock"}),
    ];
    for (i, p) in bad.into_iter().enumerate() {
        let b = with_profile(&["true"], p, true);
        let id = unique(&format!("scbad{i}"));
        let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
        assert!(err.contains("linux.seccomp"), "case {i}: {err}");
        assert!(!rt.has_state(&id), "case {i}: state left behind");
    }
    let b = with_profile(&["true"], json!({"defaultAction": "SCMP_ACT_BOGUS"}), true);
    let err = rt.fails(&[
        "run",
        "--bundle",
        &b.path().to_string_lossy(),
        &unique("scbogus"),
    ]);
    assert!(err.contains("config.json"), "{err}");
}
