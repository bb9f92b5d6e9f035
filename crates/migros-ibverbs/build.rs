//! Turns `versions.txt` into the version script (`--version-script`) and
//! the `.symver` directives (`symver.s`, included by lib.rs), and sets the
//! soname.

use std::fmt::Write as _;

fn main() {
    let list = std::fs::read_to_string("versions.txt").expect("versions.txt");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));
    let mut map = String::new();
    let mut symver = String::new();
    let mut prev: Option<&str> = None;
    for line in list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut words = line.split_whitespace();
        let node = words.next().expect("a node name");
        let _ = writeln!(map, "{node} {{\n  global:");
        for sym in words {
            let _ = writeln!(map, "    {sym};");
            let _ = writeln!(symver, ".symver {sym}, {sym}@@{node}");
        }
        match prev {
            None => map.push_str("  local: *;\n};\n"),
            Some(p) => {
                let _ = writeln!(map, "}} {p};");
            }
        }
        prev = Some(node);
    }
    std::fs::write(out.join("libibverbs.map"), map).expect("write map");
    std::fs::write(out.join("symver.s"), symver).expect("write symver.s");
    println!("cargo:rerun-if-changed=versions.txt");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libibverbs.so.1");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        out.join("libibverbs.map").display()
    );
}
