//! `migros env`: the lines that point clients at the devices.

use std::path::{Path, PathBuf};

/// `export` lines for a shell: the socket directory, and the directory of
/// migros' `libibverbs.so.1` when one is installed next to this executable.
pub fn lines(dir: &Path, lib_dir: Option<&Path>) -> Vec<String> {
    let mut v = vec![format!(
        "export {}={}",
        migros_proto::paths::SOCKET_DIR_ENV,
        shell_quote(&dir.display().to_string())
    )];
    if let Some(lib) = lib_dir {
        let lib = shell_quote(&lib.display().to_string());
        v.push(format!(
            "export LD_LIBRARY_PATH={lib}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
        ));
    }
    v
}

/// Where migros' `libibverbs.so.1` is, if installed with this executable
/// (next to it, in `../lib/migros`) or built beside it in a checkout
/// (`target/ibverbs`, which `scripts/ibverbs.sh` fills).
pub fn lib_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    [
        bin.to_path_buf(),
        bin.join("../lib/migros"),
        bin.join("../ibverbs"),
    ]
    .into_iter()
    .find(|d| d.join("libibverbs.so.1").is_file())
    .map(|d| d.canonicalize().unwrap_or(d))
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines() {
        assert_eq!(
            lines(Path::new("/run/migros"), None),
            vec!["export MIGROS_SOCKET_DIR=/run/migros"]
        );
        let l = lines(Path::new("/tmp/a b"), Some(Path::new("/opt/m/lib")));
        assert_eq!(l[0], "export MIGROS_SOCKET_DIR='/tmp/a b'");
        assert_eq!(
            l[1],
            "export LD_LIBRARY_PATH=/opt/m/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        );
    }
}
