//! What a shared library exports, as `objdump -T` shows it: the tests of
//! the drop-in libraries check that every function is bound to its
//! version node (`RDMACM_1.0 rdma_connect`, not `Base`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// symbol → version node of the functions `lib` defines; `None` when
/// objdump cannot be run (a failing objdump panics).
pub fn defined_functions(lib: &Path) -> Option<BTreeMap<String, String>> {
    let out = Command::new("objdump").arg("-T").arg(lib).output().ok()?;
    assert!(out.status.success(), "objdump -T {}", lib.display());
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" DF .text"))
            .filter_map(|l| {
                let mut w = l.split_whitespace().rev();
                let sym = w.next()?.to_string();
                Some((sym, w.next()?.to_string()))
            })
            .collect(),
    )
}
