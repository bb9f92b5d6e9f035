//! The CRIU 4.1.1 plugin ABI (`criu-plugin.h`), written by hand: the
//! descriptor CRIU looks up with `dlsym(h, "CR_PLUGIN_DESC")`, the hook
//! numbers and stages, and `criu_get_image_dir()`, which the criu binary
//! exports and which we find at run time so that this library links
//! without CRIU.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `CRIU_PLUGIN_GEN_VERSION(0, 2, 0)`.
pub const CRIU_PLUGIN_VERSION: c_uint = 2 << 8;

/// Hook numbers (`CR_PLUGIN_HOOK__*`).
pub const HOOK_DUMP_UNIX_SK: usize = 0;
pub const HOOK_RESTORE_UNIX_SK: usize = 1;
pub const HOOK_RESUME_DEVICES_LATE: usize = 9;
pub const HOOK_PAUSE_DEVICES: usize = 10;
pub const HOOK_CHECKPOINT_DEVICES: usize = 11;
/// `CR_PLUGIN_HOOK__MAX`.
pub const HOOK_MAX: usize = 12;

/// Stages (`CR_PLUGIN_STAGE__*`) passed to `init` and `exit`.
pub const STAGE_DUMP: c_int = 0;
pub const STAGE_PRE_DUMP: c_int = 1;
pub const STAGE_RESTORE: c_int = 2;

/// `cr_plugin_desc_t`.
#[repr(C)]
pub struct CrPluginDesc {
    pub name: *const c_char,
    pub init: Option<unsafe extern "C" fn(stage: c_int) -> c_int>,
    pub exit: Option<unsafe extern "C" fn(stage: c_int, ret: c_int)>,
    pub version: c_uint,
    pub max_hooks: c_uint,
    pub hooks: [*const c_void; HOOK_MAX],
}

// The layout of the C struct on x86-64 and aarch64: three pointers, two
// unsigned ints, twelve pointers.
const _: () = assert!(std::mem::size_of::<CrPluginDesc>() == 3 * 8 + 2 * 4 + HOOK_MAX * 8);
const _: () = assert!(std::mem::align_of::<CrPluginDesc>() == 8);
const _: () = assert!(std::mem::offset_of!(CrPluginDesc, version) == 24);
const _: () = assert!(std::mem::offset_of!(CrPluginDesc, max_hooks) == 28);
const _: () = assert!(std::mem::offset_of!(CrPluginDesc, hooks) == 32);

pub type DumpUnixSk = unsafe extern "C" fn(fd: c_int, id: c_int) -> c_int;
pub type RestoreUnixSk = unsafe extern "C" fn(id: c_int) -> c_int;
pub type PidHook = unsafe extern "C" fn(pid: c_int) -> c_int;

/// The image directory CRIU works in, as an fd valid in CRIU's process and
/// in a restored task while its hooks run; `None` outside CRIU.
pub fn image_dir_fd() -> Option<c_int> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
    // the symbol up.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"criu_get_image_dir".as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: criu-plugin.h declares `int criu_get_image_dir(void)`.
    let f: unsafe extern "C" fn() -> c_int = unsafe { std::mem::transmute(sym) };
    // SAFETY: a plain call without arguments.
    let fd = unsafe { f() };
    (fd >= 0).then_some(fd)
}

/// CRIU's log levels (`log.h`).
pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;

/// Writes `line` (a whole line, newline included) to CRIU's log through
/// its exported `print_on_level`; false outside CRIU.
pub fn criu_log(level: u32, line: &std::ffi::CStr) -> bool {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
    // the symbol up.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"print_on_level".as_ptr()) };
    if sym.is_null() {
        return false;
    }
    // SAFETY: criu-log.h: `void print_on_level(unsigned int loglevel, const char *format, ...)`.
    let f: unsafe extern "C" fn(u32, *const c_char, ...) = unsafe { std::mem::transmute(sym) };
    // SAFETY: a "%s" format with one NUL-terminated string argument.
    unsafe { f(level, c"%s".as_ptr(), line.as_ptr()) };
    true
}

/// `add_inventory_plugin(name)`: records in the dump's inventory that a
/// restore needs this plugin (then `criu restore` without it fails with
/// "Missing required plugin"). `None` outside CRIU 4.x.
pub fn add_inventory_plugin(name: &std::ffi::CStr) -> Option<bool> {
    // SAFETY: symbol lookup only.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"add_inventory_plugin".as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: image.h: `int add_inventory_plugin(const char *name)`.
    let f: unsafe extern "C" fn(*const c_char) -> c_int = unsafe { std::mem::transmute(sym) };
    // SAFETY: a NUL-terminated string CRIU copies.
    Some(unsafe { f(name.as_ptr()) } == 0)
}

/// `check_and_remove_inventory_plugin(name, len)` at restore: whether the
/// dump recorded this plugin; CRIU fails the restore for recorded plugins
/// that do not remove themselves. `None` outside CRIU 4.x.
pub fn check_and_remove_inventory_plugin(name: &std::ffi::CStr) -> Option<bool> {
    // SAFETY: symbol lookup only.
    let sym = unsafe {
        libc::dlsym(
            libc::RTLD_DEFAULT,
            c"check_and_remove_inventory_plugin".as_ptr(),
        )
    };
    if sym.is_null() {
        return None;
    }
    // SAFETY: image.h: `bool check_and_remove_inventory_plugin(const char *name, size_t n)`.
    let f: unsafe extern "C" fn(*const c_char, usize) -> bool = unsafe { std::mem::transmute(sym) };
    // SAFETY: a NUL-terminated string and its length.
    Some(unsafe { f(name.as_ptr(), name.to_bytes().len()) })
}
