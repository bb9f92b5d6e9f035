//! `--volume HOST:DEST[:ro]`: a host path bind-mounted into a container,
//! by either engine.

use std::fmt;
use std::path::PathBuf;

use crate::engine::runc::spec::HOST_DIRS;

/// A host path bind-mounted into a container (`--volume HOST:DEST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    pub host: PathBuf,
    pub dest: String,
    pub ro: bool,
}

impl std::str::FromStr for Volume {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, ro) = match s.strip_suffix(":ro") {
            Some(r) => (r, true),
            None => (s.strip_suffix(":rw").unwrap_or(s), false),
        };
        let Some((host, dest)) = rest.split_once(':') else {
            return Err(format!("volume {s:?} is not HOST:DEST[:ro]"));
        };
        if !host.starts_with('/') || !dest.starts_with('/') || dest.contains("..") {
            return Err(format!("volume {s:?}: both paths must be absolute"));
        }
        if HOST_DIRS
            .iter()
            .chain(&["/proc", "/sys", "/dev"])
            .any(|d| dest == *d || dest.starts_with(&format!("{d}/")))
        {
            return Err(format!("volume {s:?}: {dest} is inside a system mount"));
        }
        Ok(Volume {
            host: PathBuf::from(host),
            dest: dest.to_string(),
            ro,
        })
    }
}

/// `HOST:DEST[:ro]`, as parsed (and as `docker -v` takes it).
impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host.display(), self.dest)?;
        if self.ro {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse() {
        let v: Volume = "/a:/b".parse().unwrap();
        assert_eq!(
            (v.host.to_str(), v.dest.as_str(), v.ro),
            (Some("/a"), "/b", false)
        );
        assert!("/a:/b:ro".parse::<Volume>().unwrap().ro);
        for bad in [
            "/a",
            "a:/b",
            "/a:b",
            "/a:/usr/x",
            "/a:/proc",
            "/a:/x/../usr",
        ] {
            assert!(bad.parse::<Volume>().is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_print_as_parsed() {
        for s in ["/a:/b", "/h/bin:/opt/bin:ro"] {
            assert_eq!(s.parse::<Volume>().unwrap().to_string(), s);
        }
    }
}
