//! Byte sizes and byte rates on the command line: a decimal number and a
//! unit, `B K KB KiB M MB MiB G GB GiB` (K, M, G are binary, as in nginx;
//! KB, MB, GB decimal; KiB, MiB, GiB binary), and for a rate `/s`.

/// The units and their sizes in bytes.
const UNITS: &[(&str, f64)] = &[
    ("B", 1.0),
    ("K", 1024.0),
    ("KB", 1e3),
    ("KiB", 1024.0),
    ("M", 1_048_576.0),
    ("MB", 1e6),
    ("MiB", 1_048_576.0),
    ("G", 1_073_741_824.0),
    ("GB", 1e9),
    ("GiB", 1_073_741_824.0),
];

const SIZE_FORM: &str = "a number and a unit (B K KB KiB M MB MiB G GB GiB), e.g. 64KiB or 1.5MB";
const RATE_FORM: &str =
    "a number, a unit (B K KB KiB M MB MiB G GB GiB) and /s, e.g. 1MiB/s or 500KB/s";

/// A size such as `64KiB` or `1500`, in whole bytes (at least 1), or an
/// error naming `flag` and the accepted form.
pub fn size(flag: &str, s: &str) -> Result<u64, String> {
    parse_bytes(s.trim()).ok_or_else(|| format!("{flag} must be {SIZE_FORM} (got {s:?})"))
}

/// A rate such as `1MiB/s`, in whole bytes per second (at least 1), or an
/// error naming `flag` and the accepted form.
pub fn rate(flag: &str, s: &str) -> Result<u64, String> {
    let bad = || format!("{flag} must be {RATE_FORM} (got {s:?})");
    let amount = s.trim().strip_suffix("/s").ok_or_else(bad)?;
    parse_bytes(amount.trim()).ok_or_else(bad)
}

fn parse_bytes(s: &str) -> Option<u64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim();
    let scale = if unit.is_empty() {
        1.0
    } else {
        UNITS.iter().find(|(u, _)| *u == unit)?.1
    };
    let bytes = (number * scale).round();
    // Whole bytes within what the core's exact arithmetic takes.
    (bytes >= 1.0 && bytes <= drip::core::MAX_EXACT as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates() {
        assert_eq!(size("--burst", "64KiB").unwrap(), 65_536);
        assert_eq!(size("--burst", "1500").unwrap(), 1500);
        assert_eq!(size("--burst", "1.5MB").unwrap(), 1_500_000);
        assert_eq!(size("--burst", "2K").unwrap(), 2048);
        assert_eq!(rate("--rate", "1MiB/s").unwrap(), 1 << 20);
        assert_eq!(rate("--rate", "1 GiB/s").unwrap(), 1 << 30);
        assert_eq!(rate("--rate", "500KB/s").unwrap(), 500_000);
        assert_eq!(rate("--rate", "64B/s").unwrap(), 64);
        for bad in ["1MiB", "fast/s", "1Mb/s", "0B/s", "-1K/s", ""] {
            let e = rate("--rate", bad).unwrap_err();
            assert!(
                e.starts_with("--rate must be") && e.contains("1MiB/s"),
                "{e}"
            );
        }
        let e = size("--burst", "lots").unwrap_err();
        assert!(
            e.starts_with("--burst must be") && e.contains("64KiB"),
            "{e}"
        );
    }
}
