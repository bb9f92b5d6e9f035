//! The CRIU plugin of migros: `migros_criu.so`, installed in
//! `/usr/lib/criu/` (scripts/install-criu-plugin.sh), lets `criu dump` /
//! `criu restore` (and runc, Docker… through them) move a process that
//! uses a migros device.
//!
//! A process reaches its daemon through unix sockets (a session connection
//! and one per completion channel); its rings and MRs are its own memory,
//! which CRIU dumps and restores at the same addresses. The plugin adds
//! what CRIU cannot see, talking to the daemons on their admin sockets
//! (`*.sock` in the admin directory `<dir>.admin` of each socket directory:
//! `$MIGROS_SOCKET_DIR`, `$MIGROS_RESTORE_SOCKET_DIR`, `/run/migros` and
//! `/run/migros/nodes/*/`, or only those of `$MIGROS_CRIU_SOCKET_DIRS` when
//! that is set; only daemons running as root are asked):
//!
//! | hook | where it runs | what it does |
//! |---|---|---|
//! | PAUSE_DEVICES(pid) | CRIU, before the freeze | `Pause{pid}` to every daemon: QPs stop, the daemon writes nothing more into the task |
//! | CHECKPOINT_DEVICES(pid) | CRIU, task frozen | `Checkpoint{pid}`; each session image becomes `migros-session-<id>.img` |
//! | DUMP_UNIX_SK(fd, inode) | CRIU, after memory | for a session/channel socket: `migros-sk-<inode>.img` with the bytes the task had not read (kernel queue + what the daemon held back) and the fd flags; claims the socket |
//! | exit(DUMP, ret≠0), exit(PRE_DUMP) | CRIU | `Resume{pid}` where it paused: the task runs on, so do its QPs |
//! | RESTORE_UNIX_SK(inode) | inside the restored task | connects to the daemon (same path, or `$MIGROS_RESTORE_SOCKET_DIR`/same name), sends RestoreSession/RestoreChannel, reads exactly one answer frame, returns the fd |
//! | RESUME_DEVICES_LATE(pid) | CRIU, before the task runs | `Resume{pid}` to every daemon: restored QPs start (RESUME on the wire) |
//!
//! A dump that checkpointed sessions names the plugin in CRIU's inventory,
//! so restoring it without the plugin fails with "Missing required plugin:
//! migros". A daemon that fails Pause or Resume but lists no session of the
//! task (an older daemon) is ignored with a warning.
//!
//! Every hook logs into CRIU's log (through CRIU's `print_on_level`; to
//! stderr outside CRIU) with the prefix `migros-criu:`: info at level 3
//! (`-v3` and more), warnings and errors always. No hook panics across the
//! FFI boundary or aborts CRIU: a failure is an error return with a
//! message saying what failed. For tests, `MIGROS_CRIU_FAIL=<hook>[,…]`
//! makes hooks fail after their work and `MIGROS_CRIU_SLEEP=<hook>:<ms>`
//! makes them sleep (hooks: pause, checkpoint, dump_unix_sk,
//! restore_unix_sk, resume).

pub mod daemons;
pub mod ffi;
pub mod image;
pub mod plugin;
pub mod sock;

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ffi::CrPluginDesc;
use plugin::{log, log_error, HookResult};

/// The descriptor CRIU looks up by name. `static mut`: CRIU only reads it,
/// but it lives in writable memory like the C macro's, whatever CRIU does.
#[no_mangle]
pub static mut CR_PLUGIN_DESC: CrPluginDesc = CrPluginDesc {
    name: plugin::PLUGIN_NAME.as_ptr(),
    init: Some(cr_init),
    exit: Some(cr_exit),
    version: ffi::CRIU_PLUGIN_VERSION,
    max_hooks: ffi::HOOK_MAX as u32,
    hooks: hooks(),
};

const fn hooks() -> [*const c_void; ffi::HOOK_MAX] {
    let mut h = [std::ptr::null(); ffi::HOOK_MAX];
    h[ffi::HOOK_DUMP_UNIX_SK] = cr_dump_unix_sk as ffi::DumpUnixSk as *const c_void;
    h[ffi::HOOK_RESTORE_UNIX_SK] = cr_restore_unix_sk as ffi::RestoreUnixSk as *const c_void;
    h[ffi::HOOK_RESUME_DEVICES_LATE] = cr_resume_devices_late as ffi::PidHook as *const c_void;
    h[ffi::HOOK_PAUSE_DEVICES] = cr_pause_devices as ffi::PidHook as *const c_void;
    h[ffi::HOOK_CHECKPOINT_DEVICES] = cr_checkpoint_devices as ffi::PidHook as *const c_void;
    h
}

/// Runs a hook body: a failure is logged and returned as `-errno`; a panic
/// is caught, logged and returned as `-EIO`.
fn guard<T>(hook: &str, f: impl FnOnce() -> HookResult<T>, ok: impl FnOnce(T) -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => ok(v),
        Ok(Err(failure)) => {
            log_error!("{}", failure.message);
            -failure.errno.max(1)
        }
        Err(_) => {
            log_error!("{hook}: internal error (panic), failing the hook");
            -libc::EIO
        }
    }
}

unsafe extern "C" fn cr_init(stage: c_int) -> c_int {
    guard("init", || plugin::init(stage), |()| 0)
}

unsafe extern "C" fn cr_exit(stage: c_int, ret: c_int) {
    if catch_unwind(|| plugin::exit(stage, ret)).is_err() {
        log_error!("exit: internal error (panic)");
    }
}

unsafe extern "C" fn cr_pause_devices(pid: c_int) -> c_int {
    log!("PAUSE_DEVICES pid {pid}");
    guard("pause", || plugin::pause_devices(pid), |()| 0)
}

unsafe extern "C" fn cr_checkpoint_devices(pid: c_int) -> c_int {
    log!("CHECKPOINT_DEVICES pid {pid}");
    guard("checkpoint", || plugin::checkpoint_devices(pid), |()| 0)
}

unsafe extern "C" fn cr_dump_unix_sk(fd: c_int, id: c_int) -> c_int {
    log!("DUMP_UNIX_SK fd {fd} id {}", id as u32);
    guard(
        "dump_unix_sk",
        || plugin::dump_unix_sk(fd, id),
        |ours| if ours { 0 } else { -libc::ENOTSUP },
    )
}

unsafe extern "C" fn cr_restore_unix_sk(id: c_int) -> c_int {
    log!(
        "RESTORE_UNIX_SK id {} in pid {}",
        id as u32,
        std::process::id()
    );
    guard(
        "restore_unix_sk",
        || plugin::restore_unix_sk(id),
        |fd| fd.unwrap_or(-libc::ENOTSUP),
    )
}

unsafe extern "C" fn cr_resume_devices_late(pid: c_int) -> c_int {
    log!("RESUME_DEVICES_LATE pid {pid}");
    guard("resume", || plugin::resume_devices_late(pid), |()| 0)
}
