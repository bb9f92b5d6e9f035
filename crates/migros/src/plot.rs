//! A bandwidth-over-time chart as a standalone SVG file (no plotting
//! dependency: a line, two axes with ticks, shaded spans for the pauses and
//! dashed markers for instants, their labels in rows that never overlap),
//! for `migros demo`.

use std::fmt::Write as _;
use std::time::Duration;

/// One measurement: seconds since the start, and Gbit/s over the interval
/// that ended then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub gbits: f64,
}

/// A marked span of time (e.g. the migration's pause), with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub from: f64,
    pub to: f64,
    pub label: String,
}

impl Sample {
    /// The rate at `t` of `bytes` moved in the `secs` seconds before.
    pub fn rate(t: f64, bytes: u64, secs: f64) -> Sample {
        Sample {
            t,
            gbits: bytes as f64 * 8.0 / secs / 1e9,
        }
    }
}

impl Span {
    /// The pause of length `pause` that ended at `end` (from no earlier
    /// than the start), labelled with its milliseconds.
    pub fn pause(pause: Duration, end: f64) -> Span {
        Span {
            from: (end - pause.as_secs_f64()).max(0.0),
            to: end,
            label: format!("pause {:.1} ms", pause.as_secs_f64() * 1e3),
        }
    }

    /// A marker at the instant `t`.
    pub fn instant(t: f64, label: &str) -> Span {
        Span {
            from: t,
            to: t,
            label: label.into(),
        }
    }
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

/// The chart of `samples` with `spans` shaded, titled `title`.
pub fn bandwidth_svg(title: &str, samples: &[Sample], spans: &[Span]) -> String {
    let t_max = samples
        .iter()
        .map(|s| s.t)
        .chain(spans.iter().map(|s| s.to))
        .fold(0.0_f64, f64::max)
        .max(1e-3);
    let y_max = nice_ceiling(samples.iter().map(|s| s.gbits).fold(0.0_f64, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + (t / t_max).clamp(0.0, 1.0) * plot_w;
    let y = |g: f64| TOP + plot_h - (g / y_max).clamp(0.0, 1.0) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(
        svg,
        r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"##,
        WIDTH / 2.0,
        escape(title)
    );
    // Labels go on top of everything, in the order of their spans.
    let mut labels = Labels::default();
    let mut label_svg = String::new();
    let mut in_time = spans.iter().collect::<Vec<_>>();
    in_time.sort_by(|a, b| a.from.total_cmp(&b.from));
    for span in in_time {
        let (x0, x1) = (x(span.from), x(span.to));
        if span.to <= span.from {
            // An instant (the start of the migration): a dashed marker.
            let _ = writeln!(
                svg,
                r##"<line x1="{x0:.1}" y1="{TOP}" x2="{x0:.1}" y2="{}" stroke="#b03a1e" stroke-dasharray="4 3"/>"##,
                TOP + plot_h
            );
        } else {
            // At least 2 px wide, so a millisecond pause stays visible.
            let w = (x1 - x0).max(2.0);
            let _ = writeln!(
                svg,
                r##"<rect x="{x0:.1}" y="{TOP}" width="{w:.1}" height="{plot_h}" fill="#e4572e" fill-opacity="0.25"/>"##
            );
        }
        let at = labels.place(x0, x0 + (x1 - x0).max(2.0), &span.label);
        let _ = writeln!(
            label_svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{LABEL_HEIGHT}" fill="white" fill-opacity="0.7"/><text x="{:.1}" y="{:.1}" fill="#b03a1e">{}</text>"##,
            at.left - 2.0,
            at.baseline - LABEL_HEIGHT + 4.0,
            at.width + 4.0,
            at.left,
            at.baseline,
            escape(&span.label)
        );
    }
    for i in 0..=5 {
        let g = y_max * f64::from(i) / 5.0;
        let yy = y(g);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            trim(g)
        );
    }
    let step = nice_ceiling(t_max / 8.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let xx = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{}" x2="{xx:.1}" y2="{}" stroke="#333"/><text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 18.0,
            trim(t)
        );
        t += step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#333"/><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
        TOP + plot_h,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle">time (s)</text>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">Gbit/s</text>"##,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    if !samples.is_empty() {
        let mut points = String::new();
        for s in samples {
            let _ = write!(points, "{:.1},{:.1} ", x(s.t), y(s.gbits));
        }
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="#1f5fa8" stroke-width="1.5"/>"##,
            points.trim_end()
        );
    }
    svg.push_str(&label_svg);
    svg.push_str("</svg>\n");
    svg
}

/// Height of a label's row.
const LABEL_HEIGHT: f64 = 16.0;
/// Width of one character of a label (12 px sans-serif, a little generous).
const CHAR_WIDTH: f64 = 7.2;

/// Where a span's label goes: on the right of its span (on the left when
/// there is no room), in the first row from the top of the plot where it
/// overlaps no other label.
#[derive(Default)]
struct Labels {
    /// Every label placed so far: row, left and right edge.
    placed: Vec<(usize, f64, f64)>,
}

/// A placed label: its left edge, baseline and width.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Placed {
    left: f64,
    baseline: f64,
    width: f64,
}

impl Labels {
    /// Places `text`, the label of the span drawn from `x0` to `x1`.
    fn place(&mut self, x0: f64, x1: f64, text: &str) -> Placed {
        let width = text.chars().count() as f64 * CHAR_WIDTH;
        let left = if x1 + 4.0 + width <= WIDTH - RIGHT {
            x1 + 4.0
        } else {
            (x0 - 4.0 - width).max(LEFT)
        };
        let right = left + width;
        let gap = 6.0;
        let row = (0..)
            .find(|r| {
                !self
                    .placed
                    .iter()
                    .any(|&(pr, pl, prr)| pr == *r && left < prr + gap && pl < right + gap)
            })
            .expect("an unbounded range has a free row");
        self.placed.push((row, left, right));
        Placed {
            left,
            baseline: TOP + 14.0 + row as f64 * LABEL_HEIGHT,
            width,
        }
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ `v` (1 for v ≤ 0).
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * base >= v * (1.0 - 1e-12) {
            return m * base;
        }
    }
    10.0 * base
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(19.0), 20.0);
        assert_eq!(nice_ceiling(21.0), 25.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn chart_has_the_line_the_pause_and_escaped_text() {
        let samples: Vec<Sample> = (0..50)
            .map(|i| Sample {
                t: f64::from(i) * 0.1,
                gbits: if i == 20 { 0.0 } else { 18.0 },
            })
            .collect();
        let spans = [Span {
            from: 2.0,
            to: 2.004,
            label: "migration <4 ms>".into(),
        }];
        let svg = bandwidth_svg("ib_send_bw & migros", &samples, &spans);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("ib_send_bw &amp; migros"));
        assert!(svg.contains("migration &lt;4 ms&gt;"));
        let line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(line.matches(',').count(), 50, "one point per sample");
        // The pause span is drawn at least 2 px wide.
        assert!(svg.contains(r##"width="2.0" height="325""##), "{svg}");
    }

    #[test]
    fn labels_of_close_spans_do_not_overlap() {
        // The demo: the migration starts, the client's QP pauses a moment
        // later; and a span at the right edge.
        let mut labels = Labels::default();
        let placed = [
            labels.place(300.0, 300.0, "migrate"),
            labels.place(310.0, 322.0, "pause 302.3 ms"),
            labels.place(WIDTH - RIGHT - 2.0, WIDTH - RIGHT, "late"),
        ];
        for (i, a) in placed.iter().enumerate() {
            assert!(a.left >= LEFT && a.left + a.width <= WIDTH - RIGHT, "{a:?}");
            for b in &placed[i + 1..] {
                let apart = a.baseline != b.baseline
                    || a.left + a.width <= b.left
                    || b.left + b.width <= a.left;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
        assert_eq!(placed[0].baseline, TOP + 14.0);
        assert_eq!(placed[1].baseline, TOP + 14.0 + LABEL_HEIGHT);
        // No room on the right: on the left of its span.
        assert!(placed[2].left + placed[2].width < WIDTH - RIGHT - 2.0);
    }

    #[test]
    fn an_instant_is_a_dashed_marker() {
        let spans = [Span {
            from: 1.0,
            to: 1.0,
            label: "migrate".into(),
        }];
        let svg = bandwidth_svg("t", &[], &spans);
        assert!(svg.contains(r##"stroke-dasharray="4 3""##), "{svg}");
        assert!(!svg.contains("#e4572e"), "{svg}");
    }

    #[test]
    fn empty_input_still_makes_a_valid_chart() {
        let svg = bandwidth_svg("nothing", &[], &[]);
        assert!(svg.contains("</svg>"));
        assert!(!svg.contains("<polyline"));
        assert!(!svg.contains("NaN"));
    }
}
