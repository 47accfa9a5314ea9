//! The pod sandbox's process: holds the pod's namespaces, reaps orphaned
//! children and exits on SIGTERM or SIGINT. A freestanding static program
//! (no libc) that `build.rs` compiles for the agent's pause image.

#![no_std]
#![no_main]

use core::arch::asm;

const SIGINT: usize = 2;
const SIGTERM: usize = 15;
const SIGCHLD: usize = 17;
const SIG_BLOCK: usize = 0;
const WNOHANG: usize = 1;
/// The kernel's signal set size in bytes.
const SET_SIZE: usize = 8;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 14;
    pub const WAIT4: usize = 61;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const EXIT_GROUP: usize = 231;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const EXIT_GROUP: usize = 94;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const WAIT4: usize = 260;
}

#[cfg(target_arch = "x86_64")]
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b,
         in("rdx") c, in("r10") d, lateout("rcx") _, lateout("r11") _, options(nostack));
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b,
         in("x2") c, in("x3") d, options(nostack));
    ret
}

fn exit(code: usize) -> ! {
    unsafe { syscall4(nr::EXIT_GROUP, code, 0, 0, 0) };
    loop {}
}

/// Blocks the signals it waits for, so that they queue (even for PID 1,
/// whose unhandled signals the kernel would otherwise drop) and are taken
/// one at a time with `rt_sigtimedwait`.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    let set: u64 = (1 << (SIGINT - 1)) | (1 << (SIGTERM - 1)) | (1 << (SIGCHLD - 1));
    let set_ptr = &set as *const u64 as usize;
    unsafe { syscall4(nr::RT_SIGPROCMASK, SIG_BLOCK, set_ptr, 0, SET_SIZE) };
    loop {
        let sig = unsafe { syscall4(nr::RT_SIGTIMEDWAIT, set_ptr, 0, 0, SET_SIZE) };
        match sig as usize {
            SIGINT | SIGTERM => exit(0),
            SIGCHLD => while unsafe { syscall4(nr::WAIT4, usize::MAX, 0, WNOHANG, 0) } > 0 {},
            _ => {}
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(2)
}
