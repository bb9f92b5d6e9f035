//! Where a device's sockets are: one directory (default `/run/migros`,
//! `MIGROS_SOCKET_DIR` overrides it) holding `<device>.sock` for clients,
//! and next to it a directory of the same name with `.admin` appended
//! (`/run/migros.admin`) holding `<device>.sock` for administration,
//! reachable by root only. Containers get the clients' directory
//! bind-mounted; the admin directory is never inside it, so they do not
//! see the admin sockets.

use std::path::{Path, PathBuf};

/// Default socket directory.
pub const DEFAULT_SOCKET_DIR: &str = "/run/migros";
/// Environment variable that overrides the socket directory.
pub const SOCKET_DIR_ENV: &str = "MIGROS_SOCKET_DIR";
const CLIENT_SUFFIX: &str = ".sock";
/// What older daemons named their admin socket inside the socket
/// directory (left out of device lists).
const ADMIN_SUFFIX: &str = ".admin.sock";
/// Appended to the socket directory's name: the admin directory.
pub const ADMIN_DIR_SUFFIX: &str = ".admin";

/// The socket directory in effect.
pub fn socket_dir() -> PathBuf {
    std::env::var_os(SOCKET_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR))
}

/// The clients' socket of device `name`.
pub fn device_socket(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{CLIENT_SUFFIX}"))
}

/// The admin directory of socket directory `dir`: its sibling named
/// `<dir>.admin` (`/run/migros` → `/run/migros.admin`).
pub fn admin_dir(dir: &Path) -> PathBuf {
    match dir.file_name() {
        Some(n) => {
            let mut n = n.to_os_string();
            n.push(ADMIN_DIR_SUFFIX);
            dir.with_file_name(n)
        }
        None => dir.join(ADMIN_DIR_SUFFIX),
    }
}

/// The admin socket of device `name`.
pub fn admin_socket(dir: &Path, name: &str) -> PathBuf {
    admin_dir(dir).join(format!("{name}{CLIENT_SUFFIX}"))
}

/// Whether `name` is usable as a device name (it becomes a file name and
/// an ibverbs device name: letters, digits, `_`, `-`, `.`; 1 to 63 bytes).
pub fn valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !name.ends_with(".admin")
}

/// Names of the devices with a client socket in `dir`, sorted.
pub fn list_devices(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.ends_with(ADMIN_SUFFIX))
        .filter_map(|n| n.strip_suffix(CLIENT_SUFFIX).map(str::to_owned))
        .filter(|n| valid_device_name(n))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_device_name("rxe0"));
        assert!(valid_device_name("mlx-5.1_a"));
        assert!(!valid_device_name(""));
        assert!(!valid_device_name("../x"));
        assert!(!valid_device_name("a/b"));
        assert!(!valid_device_name("x.admin"));
        assert!(!valid_device_name(&"a".repeat(64)));
    }

    #[test]
    fn admin_sockets_are_outside_the_socket_directory() {
        assert_eq!(
            admin_socket(Path::new("/run/migros"), "rxe0"),
            Path::new("/run/migros.admin/rxe0.sock")
        );
        assert_eq!(
            admin_socket(Path::new("/run/migros/nodes/a/"), "rxe0"),
            Path::new("/run/migros/nodes/a.admin/rxe0.sock")
        );
        let d = Path::new("/x/y");
        assert!(!admin_socket(d, "rxe0").starts_with(d));
    }

    #[test]
    fn lists_client_sockets_only() {
        let dir = std::env::temp_dir().join(format!("migros-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["b.sock", "a.sock", "a.admin.sock", "notes.txt"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        assert_eq!(list_devices(&dir), vec!["a".to_string(), "b".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
