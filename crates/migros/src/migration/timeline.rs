//! A migration's progress (stderr, while it runs) and its timeline (the
//! report printed at the end), the same for every engine.

use std::fmt;
use std::time::Duration;

/// A duration in milliseconds, as the timeline shows it.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// One line of the timeline: a step, how long it took, what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub step: String,
    pub took: Duration,
    pub detail: String,
}

/// The steps done so far, with a progress bar on stderr.
#[derive(Debug, Default)]
pub struct Timeline {
    name: String,
    total: usize,
    done: usize,
    lines: Vec<Line>,
}

impl Timeline {
    /// The timeline of container `name`'s migration in `total` steps.
    pub fn new(name: &str, total: usize) -> Timeline {
        Timeline {
            name: name.to_string(),
            total,
            done: 0,
            lines: Vec::new(),
        }
    }

    /// Shows that the next step, `what`, starts.
    pub fn progress(&mut self, what: &str) {
        self.done += 1;
        let width = 20;
        let filled = width * (self.done - 1).min(self.total) / self.total.max(1);
        eprintln!(
            "migrate {}: [{}{}] {}/{} {what}",
            self.name,
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total
        );
    }

    pub fn push(&mut self, step: &str, took: Duration, detail: String) {
        self.lines.push(Line {
            step: step.to_string(),
            took,
            detail,
        });
    }

    pub fn into_lines(self) -> Vec<Line> {
        self.lines
    }
}

/// What `migros migrate` prints once the container runs on the destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `migrated <name> from <src> to <dst> (…): pid <old> -> <new>`.
    pub head: String,
    pub lines: Vec<Line>,
    /// From the container's stop to its resumption.
    pub downtime: Duration,
    /// How the downtime was measured.
    pub downtime_how: &'static str,
    /// The whole migration.
    pub total: Duration,
    pub image_bytes: u64,
    /// Where the image was kept (`--keep-image`).
    pub kept_at: Option<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.head)?;
        let mut line = |step: &str, took: Duration, detail: &str| {
            writeln!(f, "  {step:<20} {:>10}  {detail}", ms(took))
        };
        for l in &self.lines {
            line(&l.step, l.took, &l.detail)?;
        }
        line("downtime", self.downtime, self.downtime_how)?;
        let kept = match &self.kept_at {
            Some(at) => format!(" kept in {at}"),
            None => String::new(),
        };
        line(
            "total",
            self.total,
            &format!("image {}{kept}", crate::sys::human_bytes(self.image_bytes)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_aligned_and_complete() {
        let mut tl = Timeline::new("srv", 2);
        tl.progress("checking");
        tl.push(
            "check identifiers",
            Duration::from_micros(1500),
            "1 QP".into(),
        );
        tl.progress("restoring");
        tl.push("restore", Duration::from_millis(80), "criu".into());
        let r = Report {
            head: "migrated srv from a to c (runc srv.0 -> srv.1): pid 7 -> 9".into(),
            lines: tl.into_lines(),
            downtime: Duration::from_millis(120),
            downtime_how: "stopped to resumed",
            total: Duration::from_millis(300),
            image_bytes: 2048,
            kept_at: Some("/img".into()),
        };
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], r.head);
        assert_eq!(lines[1], "  check identifiers        1.5 ms  1 QP");
        assert_eq!(
            lines[3],
            "  downtime               120.0 ms  stopped to resumed"
        );
        assert_eq!(
            lines[4],
            "  total                  300.0 ms  image 2.0 KiB kept in /img"
        );
        assert_eq!(ms(Duration::from_micros(12345)), "12.3 ms");
    }
}
