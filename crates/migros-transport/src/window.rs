//! The RC send window: how many request packets (PSNs) a QP may have
//! unacknowledged, and how a loss shrinks that number for a while.
//!
//! The whole window is [`MAX_BYTES`] (1 MiB) at the path MTU, at most
//! [`MAX_PACKETS`] packets. A receiver drains its queue (socket buffer,
//! daemon loop) at its own pace; what one QP may queue there must take well
//! under an ACK timeout to drain even on a slow or loaded machine, or the
//! requester times out on data that arrived and resends it (rxe bounds
//! unacknowledged PSNs the same way).
//!
//! Real RoCE runs on a lossless fabric; over UDP a receiver slower than its
//! sender must not turn late ACKs into whole-window resends and a
//! retry-exceeded error. So after a loss the window works as TCP's
//! congestion window (NewReno, counted in packets):
//! - a retransmission timeout shrinks it to one packet: go-back-N resends
//!   the oldest unacknowledged packet alone ([`Window::on_timeout`]);
//! - a sequence NAK halves it ([`Window::on_sequence_nak`]);
//! - either sets the slow-start threshold to half the window it had (at
//!   least 2 packets);
//! - acknowledged progress grows it back ([`Window::on_ack`]): by the packets
//!   acknowledged while below the threshold (slow start), then by one packet
//!   per window's worth acknowledged (congestion avoidance), until it is
//!   whole again and congestion control steps aside;
//! - a QP that resumes after a migration's pause starts over at
//!   [`RESTART_PACKETS`] and grows by slow start up to the whole window
//!   ([`Window::on_new_path`]): its partner may be on another node, behind
//!   a receive queue that has just come back.
//!
//! The window reads no clock and no QP state: the completer tells it what
//! happened, the requester asks it whether a packet may go
//! ([`Window::has_room`]). Both pass the QP's current path MTU, which the
//! whole window depends on and `modify_qp` may change.

use serde::{Deserialize, Serialize};

use crate::image::v3::WindowImage;

/// Request packets a QP may have unacknowledged, whatever the MTU.
pub(crate) const MAX_PACKETS: u32 = 1024;
/// Request bytes a QP may have unacknowledged: the whole window in packets
/// is this over the path MTU (at most [`MAX_PACKETS`]).
pub(crate) const MAX_BYTES: u64 = 1 << 20;
/// The window after a pause, in packets ([`Window::on_new_path`]).
pub(crate) const RESTART_PACKETS: u32 = 16;
/// Lowest slow-start threshold, in packets.
const MIN_THRESHOLD: u32 = 2;

/// The send window of one RC QP, in packets (PSNs).
///
/// A checkpoint image holds its three numbers as
/// [`crate::image::v3::WindowImage`] ([`Window::to_image`],
/// [`Window::from_image`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Window {
    /// The window while shrunk after a loss; `None`: the whole window.
    #[serde(rename = "probe_window", default)]
    shrunk: Option<u32>,
    /// Slow-start threshold: half the window when it last shrank.
    #[serde(rename = "window_threshold", default)]
    threshold: u32,
    /// Packets acknowledged above the threshold and not yet turned into
    /// growth (one packet per window's worth).
    #[serde(rename = "window_credit", default)]
    credit: u32,
}

impl Window {
    /// The whole window in packets at path MTU `mtu` bytes.
    pub fn full(mtu: u64) -> u32 {
        u32::try_from(MAX_BYTES / mtu.max(1))
            .unwrap_or(MAX_PACKETS)
            .clamp(1, MAX_PACKETS)
    }

    /// Packets that may be unacknowledged now (at least 1).
    pub fn limit(&self, mtu: u64) -> u32 {
        let full = Window::full(mtu);
        self.shrunk.map_or(full, |w| w.clamp(1, full))
    }

    /// Whether another packet may go with `in_flight` PSNs unacknowledged.
    ///
    /// The packet that leaves no room after it asks for an ACK, or the
    /// requester could wait for one the responder never sends.
    pub fn has_room(&self, in_flight: i32, mtu: u64) -> bool {
        i64::from(in_flight) < i64::from(self.limit(mtu))
    }

    /// Whether congestion control limits the window (after a loss).
    #[cfg(test)]
    fn is_shrunk(&self) -> bool {
        self.shrunk.is_some()
    }

    /// The retransmission timer fired: one packet, resent alone.
    pub fn on_timeout(&mut self, mtu: u64) {
        self.shrink_to(1, mtu);
    }

    /// A sequence NAK: the receiver lost packets (its queue may have
    /// overflowed); half the window.
    pub fn on_sequence_nak(&mut self, mtu: u64) {
        let half = (self.limit(mtu) / 2).max(1);
        self.shrink_to(half, mtu);
    }

    /// The QP resumes after a pause, to a partner that may live on
    /// another node: the path is unknown, so the window restarts at
    /// [`RESTART_PACKETS`] and grows by slow start (threshold: the whole
    /// window) back to whole, as TCP restarts after idle.
    pub fn on_new_path(&mut self, mtu: u64) {
        let full = Window::full(mtu);
        if full <= RESTART_PACKETS {
            *self = Window::default();
            return;
        }
        self.threshold = full;
        self.credit = 0;
        self.shrunk = Some(RESTART_PACKETS);
    }

    /// `acked` more packets were acknowledged: a shrunk window grows.
    pub fn on_ack(&mut self, acked: u32, mtu: u64) {
        let Some(mut w) = self.shrunk else {
            return;
        };
        if w < self.threshold {
            // Slow start.
            w = w.saturating_add(acked).min(self.threshold);
        } else {
            // Congestion avoidance: one packet per window acknowledged.
            self.credit = self.credit.saturating_add(acked);
            while self.credit >= w {
                self.credit -= w;
                w += 1;
            }
        }
        if w >= Window::full(mtu) {
            *self = Window::default();
        } else {
            self.shrunk = Some(w);
        }
    }

    /// The window's state in a checkpoint image.
    pub fn to_image(self) -> WindowImage {
        WindowImage {
            shrunk: self.shrunk,
            threshold: self.threshold,
            credit: self.credit,
        }
    }

    /// The window of a checkpoint image.
    pub fn from_image(w: WindowImage) -> Window {
        Window {
            shrunk: w.shrunk,
            threshold: w.threshold,
            credit: w.credit,
        }
    }

    /// Forgets every loss: the whole window (the QP's PSNs were reset).
    pub fn reset(&mut self) {
        *self = Window::default();
    }

    fn shrink_to(&mut self, packets: u32, mtu: u64) {
        self.threshold = (self.limit(mtu) / 2).max(MIN_THRESHOLD);
        self.credit = 0;
        self.shrunk = Some(packets.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU_4096: u64 = 4096;
    const MTU_1024: u64 = 1024;

    /// A window shrunk by a timeout at MTU 4096 (whole: 256 packets).
    fn after_timeout() -> Window {
        let mut w = Window::default();
        w.on_timeout(MTU_4096);
        w
    }

    #[test]
    fn whole_window_is_one_mib_and_at_most_1024_packets() {
        assert_eq!(Window::full(4096), 256);
        assert_eq!(Window::full(1024), 1024);
        assert_eq!(Window::full(256), 1024);
        assert_eq!(Window::full(1 << 21), 1);
        assert_eq!(Window::full(0), MAX_PACKETS);
        let w = Window::default();
        assert_eq!(w.limit(MTU_4096), 256);
        assert!(w.has_room(255, MTU_4096));
        assert!(!w.has_room(256, MTU_4096));
        assert!(w.has_room(-1, MTU_4096));
    }

    #[test]
    fn timeout_leaves_one_packet_and_half_as_threshold() {
        let w = after_timeout();
        assert_eq!(w.limit(MTU_4096), 1);
        assert_eq!(w.threshold, 128);
        assert!(w.has_room(0, MTU_4096));
        assert!(!w.has_room(1, MTU_4096));
    }

    #[test]
    fn sequence_nak_halves_the_window() {
        let mut w = Window::default();
        w.on_sequence_nak(MTU_4096);
        assert_eq!((w.limit(MTU_4096), w.threshold), (128, 128));
        w.on_sequence_nak(MTU_4096);
        assert_eq!((w.limit(MTU_4096), w.threshold), (64, 64));
        // Halving never goes below one packet, the threshold below two.
        for _ in 0..10 {
            w.on_sequence_nak(MTU_4096);
        }
        assert_eq!((w.limit(MTU_4096), w.threshold), (1, MIN_THRESHOLD));
    }

    #[test]
    fn grows_by_slow_start_then_one_packet_per_window() {
        let mut w = after_timeout();
        // (packets acknowledged, window after, credit after)
        let steps = [
            // Slow start: by what is acknowledged…
            (1, 2, 0),
            (5, 7, 0),
            // …up to the threshold; the rest earns no credit.
            (1000, 128, 0),
            // Congestion avoidance: a window's worth acknowledged for one
            // packet more…
            (127, 128, 127),
            (1, 129, 0),
            // …each step at the new size, several at once.
            (129 + 130, 131, 0),
        ];
        for (acked, limit, credit) in steps {
            w.on_ack(acked, MTU_4096);
            assert_eq!((w.limit(MTU_4096), w.credit), (limit, credit), "+{acked}");
        }
    }

    #[test]
    fn grows_back_to_whole_and_steps_aside() {
        let mut w = Window::default();
        w.on_sequence_nak(MTU_4096);
        assert!(w.is_shrunk());
        let mut acks = 0;
        while w.is_shrunk() {
            w.on_ack(64, MTU_4096);
            acks += 1;
            assert!(acks < 1000, "the window never grew back");
        }
        assert_eq!(w, Window::default());
        assert_eq!(w.limit(MTU_4096), 256);
        // ACKs on a whole window change nothing.
        w.on_ack(10, MTU_4096);
        assert_eq!(w, Window::default());
    }

    #[test]
    fn threshold_is_half_of_the_window_at_the_loss() {
        let mut w = after_timeout();
        w.on_ack(9, MTU_4096);
        assert_eq!(w.limit(MTU_4096), 10);
        w.on_sequence_nak(MTU_4096);
        assert_eq!((w.limit(MTU_4096), w.threshold), (5, 5));
        w.on_timeout(MTU_4096);
        assert_eq!((w.limit(MTU_4096), w.threshold), (1, MIN_THRESHOLD));
    }

    #[test]
    fn the_whole_window_follows_the_path_mtu() {
        let mut w = Window::default();
        w.on_sequence_nak(MTU_1024);
        assert_eq!(w.limit(MTU_1024), 512);
        // A larger MTU makes the whole window smaller: the shrunk one is
        // capped by it, and growing past it makes the window whole.
        assert_eq!(w.limit(MTU_4096), 256);
        w.on_ack(1, MTU_4096);
        assert!(!w.is_shrunk());
    }

    #[test]
    fn a_new_path_starts_small_and_slow_starts_to_whole() {
        let mut w = Window::default();
        w.on_new_path(MTU_1024);
        assert_eq!(w.limit(MTU_1024), RESTART_PACKETS);
        assert!(!w.has_room(16, MTU_1024));
        // Slow start all the way: the window doubles per window acknowledged.
        let mut limits = Vec::new();
        while w.is_shrunk() {
            let l = w.limit(MTU_1024);
            limits.push(l);
            w.on_ack(l, MTU_1024);
        }
        assert_eq!(limits, [16, 32, 64, 128, 256, 512]);
        assert_eq!(w, Window::default());
        // A whole window no larger than the restart: nothing to shrink.
        let mut w = Window::default();
        w.on_new_path(1 << 20);
        assert_eq!(w, Window::default());
    }

    #[test]
    fn reset_forgets_the_loss() {
        let mut w = after_timeout();
        w.on_ack(200, MTU_4096);
        w.reset();
        assert_eq!(w, Window::default());
        assert_eq!(w.limit(MTU_4096), 256);
    }

    #[test]
    fn image_keeps_its_field_names() {
        let mut w = after_timeout();
        w.on_ack(127, MTU_4096);
        w.on_ack(3, MTU_4096);
        let json = serde_json::to_value(w).expect("plain data serialises");
        assert_eq!(
            json,
            serde_json::json!({"probe_window": 128, "window_threshold": 128, "window_credit": 3})
        );
        let back: Window = serde_json::from_value(json).expect("and reads back");
        assert_eq!(back, w);
        // An image written before congestion control had none of them.
        let old: Window = serde_json::from_str("{}").expect("missing fields default");
        assert_eq!(old, Window::default());
    }
}
