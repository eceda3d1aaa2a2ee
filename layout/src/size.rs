//! The one size grammar of every program's options (`--size`, `--journal_size`,
//! `block_size` in a config file…).
//!
//! A size is a whole number of bytes (decimal, or hexadecimal with `0x`), optionally followed
//! by a unit `K`, `M`, `G`, `T` or `P`, case-insensitive, itself optionally followed by `B`
//! or `iB`: `4096`, `128k`, `1G`, `1GiB`, `10GB`, `0x1000`. Units are powers of 1024 whatever
//! the spelling, as in the original Vitastor (its `1M` is 2^20), so `1MB` = `1MiB` = `1M`.
//! A bare `B` suffix means bytes. Blanks around the number and the unit are ignored.

/// Why a size string is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text does not follow the grammar.
    #[error("bad size {0:?}: expected a whole number with an optional unit K, M, G, T or P (e.g. 4096, 128K, 10GiB)")]
    Syntax(String),
    /// The value does not fit in 64 bits.
    #[error("size {0:?} is too large")]
    Overflow(String),
}

/// Parses a size (see the module docs).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let syntax = || SizeError::Syntax(text.to_string());
    let t = text.trim();
    let (radix, body) = match t.get(..2) {
        Some("0x") | Some("0X") => (16, &t[2..]),
        _ => (10, t),
    };
    let digits_end = body
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(body.len());
    let (digits, unit) = body.split_at(digits_end);
    if digits.is_empty() {
        return Err(syntax());
    }
    let n = u64::from_str_radix(digits, radix).map_err(|_| SizeError::Overflow(text.into()))?;
    let unit = unit.trim().to_ascii_lowercase();
    let (scale, rest) = match unit.chars().next() {
        Some('k') => (10, &unit[1..]),
        Some('m') => (20, &unit[1..]),
        Some('g') => (30, &unit[1..]),
        Some('t') => (40, &unit[1..]),
        Some('p') => (50, &unit[1..]),
        _ => (0, unit.as_str()),
    };
    let suffix_ok = match rest {
        "" => true,
        "b" => true,
        // "iB" only after a unit letter: "10iB" is a typo, not bytes.
        "ib" => scale > 0,
        _ => false,
    };
    if !suffix_ok {
        return Err(syntax());
    }
    n.checked_mul(1u64 << scale)
        .ok_or_else(|| SizeError::Overflow(text.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_spelling() {
        for (text, want) in [
            ("0", 0),
            ("4096", 4096),
            ("7b", 7),
            ("7B", 7),
            ("128k", 128 << 10),
            ("128K", 128 << 10),
            ("128KiB", 128 << 10),
            ("128kb", 128 << 10),
            ("1M", 1 << 20),
            ("1MB", 1 << 20),
            ("1MiB", 1 << 20),
            ("1g", 1 << 30),
            ("1GiB", 1 << 30),
            ("10G", 10 << 30),
            ("2TB", 2 << 40),
            ("1t", 1 << 40),
            ("1P", 1 << 50),
            (" 32M ", 32 << 20),
            ("32 M", 32 << 20),
            ("0x1000", 4096),
            ("0X10k", 16 << 10),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "", " ", "G", "k1", "10X", "1.5G", "-1", "+1", "10ib", "1GiBs", "1 G B", "0x", "1e6",
            "1KK",
        ] {
            assert!(
                matches!(parse_size(bad), Err(SizeError::Syntax(_))),
                "{bad:?}"
            );
        }
        for big in ["99999999999P", "16385P", "18446744073709551616"] {
            assert!(
                matches!(parse_size(big), Err(SizeError::Overflow(_))),
                "{big:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_input() {
        let e = parse_size("12Q").unwrap_err().to_string();
        assert!(e.contains("\"12Q\"") && e.contains("K, M, G"), "{e}");
    }
}
