// Version scripts from plain-text export lists, shared by the build
// scripts of migros-ibverbs (`versions.txt`) and migros-rdmacm
// (`exports.txt`, and its libibverbs link-time stand-in): each includes
// this file with `include!`.
//
// A list has one line per version node, `NODE sym sym …`, oldest first;
// `#` lines and blank lines are skipped.

/// (node, symbols) lines of a list, in order.
fn nodes(list: &str) -> Vec<(String, Vec<String>)> {
    list.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            let node = w.next().expect("a node name").to_string();
            (node, w.map(str::to_string).collect())
        })
        .collect()
}

/// The version script (each node inheriting the one before it, the first
/// hiding everything else) and the `.symver` directives that bind every
/// symbol to its node (`sym@@NODE`).
fn script(list: &[(String, Vec<String>)]) -> (String, String) {
    use std::fmt::Write as _;
    let mut map = String::new();
    let mut symver = String::new();
    let mut prev: Option<&str> = None;
    for (node, syms) in list {
        let _ = writeln!(map, "{node} {{\n  global:");
        for sym in syms {
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
    (map, symver)
}
