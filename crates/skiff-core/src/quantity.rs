//! Resource quantities (`100m`, `1.5`, `128Mi`, `2Gi`, `1e3`) as integers:
//! milli-units for CPU, plain units for everything else.

/// Parses a quantity to thousandths of a unit, rounding up as upstream does.
pub fn parse_milli(q: &str) -> Option<i128> {
    parse_scaled(q, 3)
}

/// Parses a quantity to units of 10^-`scale`, rounding up.
pub fn parse_scaled(q: &str, scale: i32) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let negative = int.starts_with('-');
    let int = int.trim_start_matches(['+', '-']);
    let digits = format!("{int}{frac}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^(-frac.len()) × multiplier, computed in thousandths.
    let mantissa: i128 = digits.parse().ok()?;
    let (mul, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with(['e', 'E']) => (1, s[1..].parse().ok()?),
        _ => return None,
    };
    let exp = exp10 + scale - frac.len() as i32;
    let scaled = mantissa.checked_mul(mul)?;
    let value = if exp >= 0 {
        scaled.checked_mul(10i128.checked_pow(exp as u32)?)?
    } else {
        let div = 10i128.checked_pow((-exp) as u32)?;
        (scaled + div - 1) / div
    };
    Some(if negative { -value } else { value })
}

/// Parses a quantity to whole units, rounding up (bytes, pods, GPUs).
pub fn parse_units(q: &str) -> Option<i128> {
    parse_milli(q).map(|m| (m + 999).div_euclid(1000))
}

/// Billionths of a unit as a quantity (`250000000n`), as metrics
/// servers show CPU.
pub fn format_nano(n: u64) -> String {
    if n == 0 {
        "0".to_owned()
    } else {
        format!("{n}n")
    }
}

/// Bytes as a quantity in the largest binary unit that holds them
/// exactly (`64Mi`, `1500Ki`, `1000`).
pub fn format_bytes(bytes: u64) -> String {
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for (q, milli) in [
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("2k", 2_000_000),
            ("1e3", 1_000_000),
            ("128Mi", 128 * 1024 * 1024 * 1000),
            ("1Gi", (1i128 << 30) * 1000),
            ("0.5Gi", (1i128 << 29) * 1000),
            ("1m", 1),
            ("0.0001", 1),
            ("250000000n", 250),
            ("1500u", 2),
        ] {
            assert_eq!(parse_milli(q), Some(milli), "{q}");
        }
        assert_eq!(parse_units("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(parse_units("100m"), Some(1));
        for bad in ["", "abc", "1x", "Mi"] {
            assert_eq!(parse_milli(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_nano(0), "0");
        assert_eq!(format_nano(1_500), "1500n");
        assert_eq!(format_bytes(64 << 20), "64Mi");
        assert_eq!(format_bytes(1500 << 10), "1500Ki");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
    }
}
