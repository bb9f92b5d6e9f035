//! Three things, all from plain-text lists:
//! - the version script (`--version-script`) and the `.symver`
//!   directives (`symver.s`, included by lib.rs) from `exports.txt`, so
//!   every export is bound to its node (`rdma_connect@@RDMACM_1.0`);
//! - the soname `librdmacm.so.1`;
//! - a link-time stand-in for `libibverbs.so.1`, made from
//!   `../migros-ibverbs/versions.txt` with the same version nodes: the
//!   library links against it, so it records `DT_NEEDED libibverbs.so.1`
//!   and versioned references (`ibv_create_qp@IBVERBS_1.1`), which the
//!   drop-in libibverbs (or Debian's) satisfies at run time. The stand-in
//!   is never installed; its functions are empty.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("../migros-ibverbs/version_script.rs");

/// Builds the libibverbs stand-in into `dir/libibverbs.so`.
fn ibverbs_stub(dir: &Path, versions: &Path) {
    let list = nodes(&std::fs::read_to_string(versions).expect("migros-ibverbs/versions.txt"));
    let (map, symver) = script(&list);
    let mut src = String::from("//! Link-time stand-in for libibverbs.so.1 (see build.rs).\n");
    for (_, syms) in &list {
        for s in syms {
            let _ = writeln!(src, "#[no_mangle] pub extern \"C\" fn {s}() {{}}");
        }
    }
    let _ = writeln!(src, "core::arch::global_asm!({symver:?});");
    std::fs::create_dir_all(dir).expect("stub dir");
    std::fs::write(dir.join("stub.rs"), src).expect("write stub.rs");
    std::fs::write(dir.join("stub.map"), map).expect("write stub.map");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "cdylib",
            "--crate-name",
        ])
        .arg("ibverbs_link_stub")
        .args([
            "-C",
            "codegen-units=1",
            "-C",
            "link-arg=-Wl,-soname,libibverbs.so.1",
        ])
        .arg("-C")
        .arg(format!(
            "link-arg=-Wl,--version-script={}",
            dir.join("stub.map").display()
        ))
        .arg("-o")
        .arg(dir.join("libibverbs.so"))
        .arg(dir.join("stub.rs"))
        .status()
        .expect("run rustc for the libibverbs stand-in");
    assert!(status.success(), "building the libibverbs stand-in failed");
}

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));
    let list = nodes(&std::fs::read_to_string("exports.txt").expect("exports.txt"));
    let (map, symver) = script(&list);
    std::fs::write(out.join("librdmacm.map"), map).expect("write map");
    std::fs::write(out.join("symver.s"), symver).expect("write symver.s");

    let versions = Path::new("../migros-ibverbs/versions.txt");
    let stub = out.join("ibverbs-stub");
    ibverbs_stub(&stub, versions);

    println!("cargo:rerun-if-changed=exports.txt");
    println!("cargo:rerun-if-changed=../migros-ibverbs/versions.txt");
    println!("cargo:rerun-if-changed=../migros-ibverbs/version_script.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librdmacm.so.1");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        out.join("librdmacm.map").display()
    );
    println!("cargo:rustc-link-search=native={}", stub.display());
    println!("cargo:rustc-link-lib=dylib=ibverbs");
}
