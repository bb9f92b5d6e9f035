//! Turns `versions.txt` into the version script (`--version-script`) and
//! the `.symver` directives (`symver.s`, included by lib.rs), and sets the
//! soname.

include!("version_script.rs");

fn main() {
    let list = nodes(&std::fs::read_to_string("versions.txt").expect("versions.txt"));
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));
    let (map, symver) = script(&list);
    std::fs::write(out.join("libibverbs.map"), map).expect("write map");
    std::fs::write(out.join("symver.s"), symver).expect("write symver.s");
    println!("cargo:rerun-if-changed=versions.txt");
    println!("cargo:rerun-if-changed=version_script.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libibverbs.so.1");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        out.join("libibverbs.map").display()
    );
}
