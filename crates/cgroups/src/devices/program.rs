//! Device rules → a `BPF_PROG_TYPE_CGROUP_DEVICE` program (pure, no syscalls).
//!
//! The kernel runs the program on every device access of a process in the
//! cgroup with a `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }` in r1, where `access_type = access << 16 | type` (type:
//! block 1, char 2; access bits: mknod 1, read 2, write 4). It returns 1 to
//! allow and 0 to deny.
//!
//! Shape of the program (see [`compile`]):
//!
//! ```text
//! prologue    load type, access, major, minor (only those compared)
//! section A   (bits with the same decisive rules share one section)
//!               the request has none of A's bits: go to section B
//!               rules, last first: the first match goes to B (allow) or deny
//!               nothing matched: deny
//! section B   … the last section's "next" is allow
//! deny:       r0 = 0; exit
//! allow:      r0 = 1; exit
//! ```
//!
//! For the default rules after a deny-all (what `hako-runtime spec` writes)
//! that is 24 instructions.
//!
//! Within a run of consecutive rules with the same decision their order does
//! not matter, so they are grouped by type, then major, and each value is
//! compared once. Jumps to the next instruction and unreachable instructions
//! (which the verifier refuses) are removed before jump offsets are resolved.

use super::{Access, DeviceKind, DeviceRule};
use crate::error::{CgroupError, Result};

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode: class | operation | source.
    pub code: u8,
    /// `dst_reg:4, src_reg:4` as a C bitfield.
    pub regs: u8,
    /// Jump offset (in instructions, from the next one) or memory offset.
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

impl BpfInsn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
        // C bitfields are allocated from the low bits on little-endian
        // targets and from the high bits on big-endian ones.
        let regs = if cfg!(target_endian = "little") {
            (src << 4) | (dst & 0xf)
        } else {
            (dst << 4) | (src & 0xf)
        };
        BpfInsn {
            code,
            regs,
            off,
            imm,
        }
    }

    /// The destination register.
    pub fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0xf
        } else {
            self.regs >> 4
        }
    }

    /// The source register.
    pub fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0xf
        }
    }
}

// Opcodes of the instructions this compiler emits (linux/bpf_common.h,
// linux/bpf.h).
/// `dst = *(u32 *)(src + off)`: BPF_LDX | BPF_W (0) | BPF_MEM
pub(crate) const LDX_W: u8 = 0x01 | 0x60;
/// `dst32 = src32` (the upper half becomes zero)
pub(crate) const MOV32_REG: u8 = 0x04 | 0xb0 | 0x08;
/// `dst32 &= imm`
pub(crate) const AND32_IMM: u8 = 0x04 | 0x50;
/// `dst32 >>= imm`
pub(crate) const RSH32_IMM: u8 = 0x04 | 0x70;
/// `dst = imm`
pub(crate) const MOV64_IMM: u8 = 0x07 | 0xb0;
/// `goto +off`
pub(crate) const JA: u8 = 0x05;
/// `if dst == imm goto +off`
pub(crate) const JEQ_IMM: u8 = 0x05 | 0x10;
/// `if dst & imm goto +off`
pub(crate) const JSET_IMM: u8 = 0x05 | 0x40;
/// `if dst != imm goto +off`
pub(crate) const JNE_IMM: u8 = 0x05 | 0x50;
/// `return r0`
pub(crate) const EXIT: u8 = 0x05 | 0x90;

/// `BPF_DEVCG_DEV_BLOCK` and `BPF_DEVCG_DEV_CHAR`, the type half of `access_type`.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

/// Registers: r1 holds the context; the prologue loads its fields here.
const R_CTX: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

/// Largest major and minor a Linux device can have (12 and 20 bits): a
/// rule naming a larger number matches nothing and is left out.
const MAX_MAJOR: u32 = (1 << 12) - 1;
const MAX_MINOR: u32 = (1 << 20) - 1;

/// Compiles `rules` (in order; later rules override earlier ones; no match
/// denies) into a program for `BPF_PROG_TYPE_CGROUP_DEVICE`.
///
/// For each access bit a request has, the last rule that matches the
/// device and includes that bit decides it; the request is allowed when
/// every one of its bits is.
pub fn compile(rules: &[DeviceRule]) -> Result<Vec<BpfInsn>> {
    // Bits whose decisive rules are the same are checked together: the
    // decision for one is then the decision for all of them.
    let mut sections: Vec<(u8, Vec<Step>)> = Vec::new();
    for bit in [Access::MKNOD, Access::READ, Access::WRITE] {
        let steps = steps_for(rules, bit);
        match sections.iter_mut().find(|(_, s)| *s == steps) {
            Some((mask, _)) => *mask |= bit.bits(),
            None => sections.push((bit.bits(), steps)),
        }
    }

    let mut asm = Asm::default();
    let allow = asm.label();
    let deny = asm.label();
    prologue(&mut asm, &sections);
    for (mask, steps) in &sections {
        let next = asm.label();
        match steps.first() {
            // Nothing allows these bits.
            None => asm.jump(JSET_IMM, R_ACCESS, i32::from(*mask), deny),
            // The last rule with these bits allows every device.
            Some(s) if s.allow && s.matches_all() => {}
            Some(_) => {
                let body = asm.label();
                asm.jump(JSET_IMM, R_ACCESS, i32::from(*mask), body);
                asm.jump(JA, 0, 0, next);
                asm.bind(body);
                for run in steps.chunk_by(|a, b| a.allow == b.allow) {
                    let target = if run[0].allow { next } else { deny };
                    // In config order, which reads better (any order is right).
                    let matchers: Vec<[Option<u32>; 3]> =
                        run.iter().rev().map(Step::fields).collect();
                    match_any(&mut asm, &matchers, 0, target);
                }
                asm.jump(JA, 0, 0, deny);
            }
        }
        asm.bind(next);
    }
    asm.jump(JA, 0, 0, allow);
    asm.bind(deny);
    asm.insn(BpfInsn::new(MOV64_IMM, 0, 0, 0, 0));
    asm.insn(BpfInsn::new(EXIT, 0, 0, 0, 0));
    asm.bind(allow);
    asm.insn(BpfInsn::new(MOV64_IMM, 0, 0, 0, 1));
    asm.insn(BpfInsn::new(EXIT, 0, 0, 0, 0));
    asm.finish().ok_or_else(|| CgroupError::Unsupported {
        field: "devices",
        reason: format!(
            "{} rules make a device filter with jumps longer than eBPF allows",
            rules.len()
        ),
    })
}

/// One rule as seen from one access bit's section: what it matches and
/// what it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    kind: DeviceKind,
    major: Option<u32>,
    minor: Option<u32>,
    allow: bool,
}

impl Step {
    fn matches_all(&self) -> bool {
        self.kind == DeviceKind::All && self.major.is_none() && self.minor.is_none()
    }

    /// The compared context fields: type, major, minor (None: any).
    fn fields(&self) -> [Option<u32>; 3] {
        let kind = match self.kind {
            DeviceKind::All => None,
            DeviceKind::Block => Some(DEV_BLOCK),
            DeviceKind::Char => Some(DEV_CHAR),
        };
        [kind, self.major, self.minor]
    }
}

/// The rules that can decide `bit`, last first, without those that never
/// take effect: rules after (in this order) one that matches every device,
/// and denials that only the default denial would follow.
fn steps_for(rules: &[DeviceRule], bit: Access) -> Vec<Step> {
    let mut steps = Vec::new();
    for r in rules.iter().rev() {
        if !r.access.contains(bit)
            || r.major.is_some_and(|m| m > MAX_MAJOR)
            || r.minor.is_some_and(|m| m > MAX_MINOR)
        {
            continue;
        }
        let step = Step {
            kind: r.kind,
            major: r.major,
            minor: r.minor,
            allow: r.allow,
        };
        let last = step.matches_all();
        steps.push(step);
        if last {
            break;
        }
    }
    while steps.last().is_some_and(|s| !s.allow) {
        steps.pop();
    }
    steps
}

/// Loads the context fields the sections compare.
fn prologue(asm: &mut Asm, sections: &[(u8, Vec<Step>)]) {
    let steps = || sections.iter().flat_map(|(_, s)| s);
    let uses = |field: usize| steps().any(|s| s.fields()[field].is_some());
    let access = sections
        .iter()
        .any(|(_, s)| !s.first().is_some_and(|f| f.allow && f.matches_all()));
    let kind = uses(0);
    match (access, kind) {
        (true, true) => {
            asm.insn(BpfInsn::new(LDX_W, R_TYPE, R_CTX, 0, 0));
            asm.insn(BpfInsn::new(MOV32_REG, R_ACCESS, R_TYPE, 0, 0));
        }
        (true, false) => asm.insn(BpfInsn::new(LDX_W, R_ACCESS, R_CTX, 0, 0)),
        (false, true) => asm.insn(BpfInsn::new(LDX_W, R_TYPE, R_CTX, 0, 0)),
        (false, false) => {}
    }
    if access {
        asm.insn(BpfInsn::new(RSH32_IMM, R_ACCESS, 0, 0, 16));
    }
    if kind {
        asm.insn(BpfInsn::new(AND32_IMM, R_TYPE, 0, 0, 0xffff));
    }
    if uses(1) {
        asm.insn(BpfInsn::new(LDX_W, R_MAJOR, R_CTX, 4, 0));
    }
    if uses(2) {
        asm.insn(BpfInsn::new(LDX_W, R_MINOR, R_CTX, 8, 0));
    }
}

/// Emits code that jumps to `target` when the device matches any of
/// `matchers` (fields from `level` on; None matches anything) and falls
/// through otherwise. Every value is compared once per group: `c 1:3`,
/// `c 1:5` and `c 5:*` become "type 2? then major 1? (minor 3 or 5), or
/// major 5".
fn match_any(asm: &mut Asm, matchers: &[[Option<u32>; 3]], level: usize, target: Label) {
    let wild_from =
        |m: &[Option<u32>; 3], level: usize| m[level.min(3)..].iter().all(Option::is_none);
    if matchers.iter().any(|m| wild_from(m, level)) {
        asm.jump(JA, 0, 0, target);
        return;
    }
    let reg = [R_TYPE, R_MAJOR, R_MINOR][level];
    let wild: Vec<_> = matchers
        .iter()
        .filter(|m| m[level].is_none())
        .copied()
        .collect();
    if !wild.is_empty() {
        match_any(asm, &wild, level + 1, target);
    }
    let mut values: Vec<u32> = Vec::new();
    for v in matchers.iter().filter_map(|m| m[level]) {
        if !values.contains(&v) {
            values.push(v);
        }
    }
    for v in values {
        let group: Vec<_> = matchers
            .iter()
            .filter(|m| m[level] == Some(v))
            .copied()
            .collect();
        // Device numbers are at most 20 bits, so `v` fits an i32 immediate
        // (which the kernel sign-extends).
        let imm = i32::try_from(v).unwrap_or(i32::MAX);
        if group.iter().any(|m| wild_from(m, level + 1)) {
            asm.jump(JEQ_IMM, reg, imm, target);
        } else {
            let skip = asm.label();
            asm.jump(JNE_IMM, reg, imm, skip);
            match_any(asm, &group, level + 1, target);
            asm.bind(skip);
        }
    }
}

/// A position in the program, bound once while emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Op {
    Insn(BpfInsn),
    /// A jump (`JA` or a conditional jump with an immediate) to a label.
    Jump {
        code: u8,
        reg: u8,
        imm: i32,
        target: Label,
    },
}

/// An assembler with forward labels.
#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    /// Label → index of the op it stands before.
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.ops.len());
    }

    fn insn(&mut self, insn: BpfInsn) {
        self.ops.push(Op::Insn(insn));
    }

    fn jump(&mut self, code: u8, reg: u8, imm: i32, target: Label) {
        self.ops.push(Op::Jump {
            code,
            reg,
            imm,
            target,
        });
    }

    fn target(&self, label: Label) -> usize {
        // Every label used by a jump is bound before `finish`.
        self.labels[label.0].unwrap_or(usize::MAX)
    }

    /// Removes unreachable ops and jumps to the next op until nothing
    /// changes, then resolves jump offsets. None if a jump is too long.
    fn finish(mut self) -> Option<Vec<BpfInsn>> {
        loop {
            let threaded = self.thread_jumps();
            let reachable = self.reachable();
            let keep: Vec<bool> = (0..self.ops.len())
                .map(|i| {
                    let useless_jump =
                        matches!(self.ops[i], Op::Jump { target, .. } if self.target(target) == i + 1);
                    reachable[i] && !useless_jump
                })
                .collect();
            if !threaded && keep.iter().all(|k| *k) {
                break;
            }
            self.retain(&keep);
        }
        self.ops
            .iter()
            .enumerate()
            .map(|(i, op)| match *op {
                Op::Insn(insn) => Some(insn),
                Op::Jump {
                    code,
                    reg,
                    imm,
                    target,
                } => {
                    let off = i16::try_from(self.target(target).checked_sub(i + 1)?).ok()?;
                    Some(BpfInsn::new(code, reg, 0, off, imm))
                }
            })
            .collect()
    }

    /// Points jumps that land on a `goto` at that goto's target. Returns
    /// whether any jump changed. (Jumps only go forward, so this ends.)
    fn thread_jumps(&mut self) -> bool {
        let mut changed = false;
        for i in 0..self.ops.len() {
            let Op::Jump { target, .. } = self.ops[i] else {
                continue;
            };
            if let Some(Op::Jump {
                code: JA,
                target: further,
                ..
            }) = self.ops.get(self.target(target)).copied()
            {
                if let Op::Jump { target, .. } = &mut self.ops[i] {
                    *target = further;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Which ops execution can reach from the first.
    fn reachable(&self) -> Vec<bool> {
        let mut seen = vec![false; self.ops.len()];
        let mut todo = vec![0usize];
        while let Some(i) = todo.pop() {
            if i >= self.ops.len() || seen[i] {
                continue;
            }
            seen[i] = true;
            match self.ops[i] {
                Op::Insn(insn) if insn.code == EXIT => {}
                Op::Insn(_) => todo.push(i + 1),
                Op::Jump { code, target, .. } => {
                    todo.push(self.target(target));
                    if code != JA {
                        todo.push(i + 1);
                    }
                }
            }
        }
        seen
    }

    /// Keeps the ops marked in `keep`; labels move to the next kept op.
    fn retain(&mut self, keep: &[bool]) {
        // new_index[i]: how many kept ops precede op i.
        let mut new_index = Vec::with_capacity(keep.len() + 1);
        let mut n = 0;
        for k in keep {
            new_index.push(n);
            n += usize::from(*k);
        }
        new_index.push(n);
        for l in self.labels.iter_mut().flatten() {
            *l = new_index[*l];
        }
        let mut i = 0;
        self.ops.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` the way the kernel would, for a device access. Only the
    /// opcodes [`compile`] emits are known; anything else, a backward or
    /// out-of-range jump, or reading a register never written fails the
    /// test.
    fn run(prog: &[BpfInsn], dev_type: u32, major: u32, minor: u32, access: u32) -> bool {
        let ctx = [(access << 16) | dev_type, major, minor];
        let mut regs = [None::<u64>; 11];
        regs[R_CTX as usize] = Some(0);
        let mut pc = 0usize;
        let read = |regs: &[Option<u64>; 11], r: u8| -> u64 {
            regs[r as usize].unwrap_or_else(|| panic!("r{r} read before written in {prog:#?}"))
        };
        loop {
            let insn = prog[pc];
            let (dst, src) = (insn.dst(), insn.src());
            let jump_to = pc + 1 + usize::try_from(insn.off).expect("forward jump");
            let mut next = pc + 1;
            match insn.code {
                LDX_W => {
                    assert_eq!(src, R_CTX, "loads only from the context");
                    let field = usize::try_from(insn.off).expect("ctx offset") / 4;
                    assert_eq!(insn.off % 4, 0);
                    regs[dst as usize] = Some(u64::from(ctx[field]));
                }
                MOV32_REG => regs[dst as usize] = Some(read(&regs, src) & 0xffff_ffff),
                AND32_IMM => regs[dst as usize] = Some(read(&regs, dst) & (insn.imm as u32 as u64)),
                RSH32_IMM => {
                    regs[dst as usize] = Some((read(&regs, dst) & 0xffff_ffff) >> insn.imm)
                }
                MOV64_IMM => regs[dst as usize] = Some(insn.imm as i64 as u64),
                JA => next = jump_to,
                // Immediates are sign-extended to 64 bits for 64-bit jumps.
                JEQ_IMM if read(&regs, dst) == insn.imm as i64 as u64 => next = jump_to,
                JNE_IMM if read(&regs, dst) != insn.imm as i64 as u64 => next = jump_to,
                JSET_IMM if read(&regs, dst) & (insn.imm as i64 as u64) != 0 => next = jump_to,
                JEQ_IMM | JNE_IMM | JSET_IMM => {}
                EXIT => return read(&regs, 0) == 1,
                other => panic!("unexpected opcode {other:#x} at {pc}"),
            }
            assert!(next < prog.len(), "jump out of the program at {pc}");
            pc = next;
        }
    }

    /// The program in a readable form, for failure messages.
    fn disasm(prog: &[BpfInsn]) -> String {
        let mut out = String::new();
        for (pc, i) in prog.iter().enumerate() {
            let (d, s, off, imm) = (i.dst(), i.src(), i.off, i.imm);
            let t = pc as i64 + 1 + i64::from(off);
            let text = match i.code {
                LDX_W => format!("r{d} = *(u32 *)(r{s} + {off})"),
                MOV32_REG => format!("w{d} = w{s}"),
                AND32_IMM => format!("w{d} &= {imm:#x}"),
                RSH32_IMM => format!("w{d} >>= {imm}"),
                MOV64_IMM => format!("r{d} = {imm}"),
                JA => format!("goto {t}"),
                JEQ_IMM => format!("if r{d} == {imm} goto {t}"),
                JNE_IMM => format!("if r{d} != {imm} goto {t}"),
                JSET_IMM => format!("if r{d} & {imm:#x} goto {t}"),
                EXIT => "exit".to_string(),
                c => format!("?? {c:#x}"),
            };
            out.push_str(&format!("{pc:3}: {text}\n"));
        }
        out
    }

    /// What the verifier checks statically: every instruction reachable,
    /// jumps forward and inside the program, the last instruction an exit.
    fn check_shape(prog: &[BpfInsn]) {
        assert_eq!(prog.last().map(|i| i.code), Some(EXIT));
        let mut reached = vec![false; prog.len()];
        reached[0] = true;
        for (pc, insn) in prog.iter().enumerate() {
            if !reached[pc] {
                panic!("unreachable instruction {pc} in\n{}", disasm(prog));
            }
            let is_jump = matches!(insn.code, JA | JEQ_IMM | JNE_IMM | JSET_IMM);
            if is_jump {
                assert!(insn.off >= 0, "backward jump at {pc}");
                let t = pc + 1 + insn.off as usize;
                assert!(t < prog.len(), "jump out of the program at {pc}");
                reached[t] = true;
            }
            if insn.code != JA && insn.code != EXIT && pc + 1 < prog.len() {
                reached[pc + 1] = true;
            }
        }
    }

    /// The rules' meaning, written plainly: per requested bit, the last
    /// matching rule with that bit decides; no such rule denies.
    fn reference(rules: &[DeviceRule], dev_type: u32, major: u32, minor: u32, access: u32) -> bool {
        [Access::MKNOD, Access::READ, Access::WRITE]
            .into_iter()
            .filter(|bit| access & u32::from(bit.bits()) != 0)
            .all(|bit| {
                rules
                    .iter()
                    .rev()
                    .find(|r| {
                        r.access.contains(bit)
                            && match r.kind {
                                DeviceKind::All => true,
                                DeviceKind::Block => dev_type == DEV_BLOCK,
                                DeviceKind::Char => dev_type == DEV_CHAR,
                            }
                            && r.major.unwrap_or(major) == major
                            && r.minor.unwrap_or(minor) == minor
                    })
                    .is_some_and(|r| r.allow)
            })
    }

    fn rules(text: &[&str]) -> Vec<DeviceRule> {
        text.iter()
            .map(|t| {
                let (verb, rule) = t.split_once(' ').expect("'allow RULE' or 'deny RULE'");
                DeviceRule::parse_v1(verb == "allow", rule).expect("valid rule")
            })
            .collect()
    }

    /// Compares program and reference on every combination of type, a few
    /// majors and minors (the ones the rules name and others) and access.
    fn check_equivalent(rules: &[DeviceRule]) -> usize {
        let prog = compile(rules).expect("compiles");
        check_shape(&prog);
        let mut majors = vec![0, 1, 2, 5, 136, MAX_MAJOR];
        let mut minors = vec![0, 1, 3, 5, 7, 9, MAX_MINOR];
        // Numbers devices can have: the kernel never asks about others.
        for r in rules {
            majors.extend(r.major.filter(|m| *m <= MAX_MAJOR));
            minors.extend(r.minor.filter(|m| *m <= MAX_MINOR));
        }
        for dev_type in [DEV_BLOCK, DEV_CHAR] {
            for &major in &majors {
                for &minor in &minors {
                    for access in 0..8 {
                        assert_eq!(
                            run(&prog, dev_type, major, minor, access),
                            reference(rules, dev_type, major, minor, access),
                            "type {dev_type} {major}:{minor} access {access:03b} with {rules:?}\n{}",
                            disasm(&prog)
                        );
                    }
                }
            }
        }
        prog.len()
    }

    #[test]
    fn empty_list_denies_everything() {
        let prog = compile(&[]).expect("compiles");
        check_equivalent(&[]);
        for access in 1..8 {
            assert!(!run(&prog, DEV_CHAR, 1, 3, access));
        }
    }

    #[test]
    fn allow_all_allows_everything() {
        let all = rules(&["allow a *:* rwm"]);
        let prog = compile(&all).expect("compiles");
        assert!(run(&prog, DEV_BLOCK, 8, 0, 7));
        // Nothing to compare: r0 = 1; exit.
        assert_eq!(prog.len(), 2);
        check_equivalent(&all);
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        check_equivalent(&rules(&["allow a *:* rwm", "deny c 1:5 rwm"]));
        check_equivalent(&rules(&["allow c 1:5 rwm", "deny c 1:5 rwm"]));
        check_equivalent(&rules(&["deny c 1:5 rwm", "allow c 1:5 rwm"]));
        check_equivalent(&rules(&[
            "allow c 1:* rwm",
            "deny c 1:3 rw",
            "allow c 1:3 r",
        ]));
        check_equivalent(&rules(&[
            "deny a *:* rwm",
            "allow a *:* rwm",
            "deny b *:* w",
        ]));
        let prog = compile(&rules(&["allow a *:* rwm", "deny c 1:5 rwm"])).expect("compiles");
        assert!(!run(&prog, DEV_CHAR, 1, 5, 2));
        assert!(run(&prog, DEV_CHAR, 1, 3, 6));
        assert!(run(&prog, DEV_BLOCK, 1, 5, 2));
    }

    #[test]
    fn partial_access() {
        let r = rules(&[
            "allow c 1:3 r",
            "deny c 1:3 w",
            "allow c 1:7 rw",
            "deny c 1:7 w",
        ]);
        check_equivalent(&r);
        let prog = compile(&r).expect("compiles");
        let (m, rd, wr) = (1, 2, 4);
        assert!(run(&prog, DEV_CHAR, 1, 3, rd));
        assert!(!run(&prog, DEV_CHAR, 1, 3, wr));
        assert!(!run(&prog, DEV_CHAR, 1, 3, rd | wr));
        assert!(!run(&prog, DEV_CHAR, 1, 3, m));
        assert!(run(&prog, DEV_CHAR, 1, 7, rd));
        assert!(!run(&prog, DEV_CHAR, 1, 7, rd | wr));
        check_equivalent(&rules(&[
            "allow c *:* m",
            "allow b *:* m",
            "allow c 1:3 rw",
        ]));
        check_equivalent(&rules(&["allow c 1:* r", "allow c 1:3 w"]));
    }

    #[test]
    fn wildcards_and_type_all() {
        check_equivalent(&rules(&["allow a 1:* rwm"]));
        check_equivalent(&rules(&["allow a *:3 rw", "deny b *:* r"]));
        check_equivalent(&rules(&[
            "allow c *:5 rwm",
            "allow b 1:* m",
            "deny a 1:5 m",
        ]));
        check_equivalent(&rules(&[
            "allow c 136:* rwm",
            "allow c 5:* rwm",
            "deny c 5:2 rwm",
        ]));
        // Numbers no device can have match nothing.
        check_equivalent(&rules(&["allow c 99999:3 rwm", "allow c 1:99999999 rwm"]));
    }

    #[test]
    fn default_rules_compile_small() {
        let mut r = rules(&["deny a *:* rwm"]);
        r.extend(super::super::DEFAULT_RULES);
        let n = check_equivalent(&r);
        // Prologue 6, "any bit requested?" 2, type 1, major 1 and its five
        // minors 6, major 5 and its three minors 4, major 136 1, deny 2,
        // allow 2. (The leading deny-all is the default and costs nothing.)
        assert_eq!(n, 24, "{}", disasm(&compile(&r).expect("compiles")));
    }

    /// Many pseudo-random rule lists against the reference.
    #[test]
    fn random_rule_lists() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..400 {
            let len = next(7) as usize;
            let list: Vec<DeviceRule> = (0..len)
                .map(|_| DeviceRule {
                    allow: next(3) != 0,
                    kind: [DeviceKind::All, DeviceKind::Char, DeviceKind::Block][next(3) as usize],
                    major: [None, Some(1), Some(5)][next(3) as usize],
                    minor: [None, Some(3), Some(5), Some(7)][next(4) as usize],
                    access: Access::from_bits(1 + next(7) as u8),
                })
                .collect();
            check_equivalent(&list);
        }
    }
}
