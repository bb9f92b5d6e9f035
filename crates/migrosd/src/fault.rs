//! Test-only fault injection on the transmit path: drop, reorder (hold a
//! datagram and send it after the next one) and duplicate, each with a
//! probability, from a seeded random generator.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Probabilities of each fault, and the seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSpec {
    pub drop: f64,
    pub reorder: f64,
    pub dup: f64,
    pub seed: u64,
}

impl std::str::FromStr for FaultSpec {
    type Err = String;

    /// `drop=P,reorder=P,dup=P[,seed=N]`, any subset, P in 0..=1.
    fn from_str(s: &str) -> Result<FaultSpec, String> {
        let mut spec = FaultSpec {
            drop: 0.0,
            reorder: 0.0,
            dup: 0.0,
            seed: 0x6d69_6772_6f73,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("fault {part:?} is not key=value"))?;
            if k == "seed" {
                spec.seed = v
                    .parse()
                    .map_err(|_| format!("seed {v:?} is not a number"))?;
                continue;
            }
            let p: f64 = v
                .parse()
                .map_err(|_| format!("probability {v:?} is not a number"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("probability {p} is outside 0..=1"));
            }
            match k {
                "drop" => spec.drop = p,
                "reorder" => spec.reorder = p,
                "dup" => spec.dup = p,
                _ => return Err(format!("unknown fault {k:?} (drop, reorder, dup, seed)")),
            }
        }
        Ok(spec)
    }
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Hold it back and send it after the next datagram.
    Hold,
    Duplicate,
}

/// Decides the fate of each datagram.
#[derive(Debug)]
pub struct Faults {
    spec: FaultSpec,
    rng: SmallRng,
    pub dropped: u64,
    pub reordered: u64,
    pub duplicated: u64,
}

impl Faults {
    pub fn new(spec: FaultSpec) -> Faults {
        Faults {
            spec,
            rng: SmallRng::seed_from_u64(spec.seed),
            dropped: 0,
            reordered: 0,
            duplicated: 0,
        }
    }

    /// The fate of the next datagram; `can_hold` is false while one is held.
    pub fn verdict(&mut self, can_hold: bool) -> Verdict {
        let x: f64 = self.rng.gen();
        let s = self.spec;
        if x < s.drop {
            self.dropped += 1;
            Verdict::Drop
        } else if x < s.drop + s.reorder && can_hold {
            self.reordered += 1;
            Verdict::Hold
        } else if x < s.drop + s.reorder + s.dup {
            self.duplicated += 1;
            Verdict::Duplicate
        } else {
            Verdict::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: FaultSpec = "drop=0.1,dup=0.2,seed=7".parse().unwrap();
        assert_eq!((s.drop, s.reorder, s.dup, s.seed), (0.1, 0.0, 0.2, 7));
        assert!("drop=2".parse::<FaultSpec>().is_err());
        assert!("lose=0.1".parse::<FaultSpec>().is_err());
        assert!("drop".parse::<FaultSpec>().is_err());
    }

    #[test]
    fn verdicts_follow_probabilities() {
        let mut f = Faults::new("drop=0.5".parse().unwrap());
        let drops = (0..1000)
            .filter(|_| f.verdict(true) == Verdict::Drop)
            .count();
        assert!((400..600).contains(&drops), "{drops}");
        let mut none = Faults::new("".parse().unwrap());
        assert!((0..100).all(|_| none.verdict(true) == Verdict::Pass));
    }
}
