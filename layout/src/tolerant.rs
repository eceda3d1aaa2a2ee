//! Numbers and flags as other writers put them in etcd.
//!
//! The original Vitastor's monitor writes OSD numbers as JSON strings (`"osd_set":["1","2"]`,
//! `"primary":"2"`), its OSDs write `osd/stats` `time` as a string (`"1700000000.123"`), and
//! operators write options either way. Every reader of a cluster value accepts, wherever a
//! number is expected, a JSON number or a string holding one; wherever a flag is expected,
//! `true`/`false`, `1`/`0` or those as strings. Writers in this project always write plain
//! numbers and booleans.
//!
//! This module holds the one definition of that rule: serde `deserialize_with` functions for
//! the layout's types, and `*_of` accessors for code that reads loose JSON (stats, options).
//!
//! # What it must never do
//! - Guess: `"1.5"` is not an integer, `"-1"` is not an OSD number, `"yes"` is not a flag;
//!   they are errors (or `None` from the accessors), never a silent 0.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde_json::Value;

/// Largest float that converts to u64 without rounding past the end of the range.
const U64_LIMIT_F64: f64 = 18_446_744_073_709_551_616.0;

/// A non-negative integer written as a number or as a numeric string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Uint(u64);

struct UintVisitor;

impl<'de> Visitor<'de> for UintVisitor {
    type Value = Uint;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a non-negative integer (a number or a numeric string)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Uint, E> {
        Ok(Uint(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Uint, E> {
        u64::try_from(v)
            .map(Uint)
            .map_err(|_| E::custom(format!("{v} is negative")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Uint, E> {
        // JSON writers (JavaScript) may write 2 as 2.0; a fraction is a real error.
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < U64_LIMIT_F64 {
            Ok(Uint(v as u64))
        } else {
            Err(E::custom(format!("{v} is not a non-negative integer")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Uint, E> {
        parse_uint(v)
            .map(Uint)
            .ok_or_else(|| E::custom(format!("{v:?} is not a non-negative integer")))
    }
}

impl<'de> Deserialize<'de> for Uint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Uint, D::Error> {
        d.deserialize_any(UintVisitor)
    }
}

fn parse_uint(s: &str) -> Option<u64> {
    let s = s.trim();
    // `u64::from_str` takes a leading '+'; a number in etcd never has one.
    if s.starts_with('+') {
        return None;
    }
    s.parse().ok()
}

fn narrow<T: TryFrom<u64>, E: de::Error>(n: u64) -> Result<T, E> {
    T::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))
}

/// A non-negative integer field (`u64`, `u32`, `u16`…): a number or a numeric string.
pub fn num<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    let Uint(n) = Uint::deserialize(d)?;
    narrow(n)
}

/// A list of non-negative integers, each a number or a numeric string.
pub fn nums<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Uint>::deserialize(d)?
        .into_iter()
        .map(|Uint(n)| narrow(n))
        .collect()
}

/// A list of lists of non-negative integers (`pg/history` `osd_sets`).
pub fn num_sets<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Vec<Vec<T>>, D::Error> {
    Vec::<Vec<Uint>>::deserialize(d)?
        .into_iter()
        .map(|set| set.into_iter().map(|Uint(n)| narrow(n)).collect())
        .collect()
}

/// A flag: `true`/`false`, `1`/`0`, or those as strings.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    bool_of(&v).ok_or_else(|| de::Error::custom(format!("{v} is not true or false")))
}

/// A finite number field (`reweight`): a number or a numeric string.
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    f64_of(&v).ok_or_else(|| de::Error::custom(format!("{v} is not a number")))
}

/// A non-negative integer in loose JSON: a number (an integral float too) or a numeric string.
pub fn u64_of(v: &Value) -> Option<u64> {
    Uint::deserialize(v).ok().map(|Uint(n)| n)
}

/// A finite number in loose JSON: a number or a numeric string (`osd/stats` `time`).
pub fn f64_of(v: &Value) -> Option<f64> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    f.is_finite().then_some(f)
}

/// A flag in loose JSON: `true`/`false`, `1`/`0`, or those as strings.
pub fn bool_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(_) => match u64_of(v)? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `field` of an object as a non-negative integer; `None` when absent or not one.
pub fn u64_field(v: &Value, field: &str) -> Option<u64> {
    v.get(field).and_then(u64_of)
}

/// `field` of an object as a finite number; `None` when absent or not one.
pub fn f64_field(v: &Value, field: &str) -> Option<f64> {
    v.get(field).and_then(f64_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Sample {
        #[serde(deserialize_with = "num")]
        a: u64,
        #[serde(deserialize_with = "num")]
        port: u16,
        #[serde(deserialize_with = "nums")]
        set: Vec<u64>,
        #[serde(deserialize_with = "num_sets")]
        sets: Vec<Vec<u32>>,
        #[serde(deserialize_with = "flag")]
        on: bool,
    }

    #[test]
    fn numbers_and_numeric_strings_are_equal() {
        let as_numbers = json!({"a":7,"port":1000,"set":[1,0,2],"sets":[[1,2],[3]],"on":true});
        let as_strings =
            json!({"a":"7","port":"1000","set":["1","0",2],"sets":[["1","2"],["3"]],"on":"1"});
        let a: Sample = serde_json::from_value(as_numbers).unwrap();
        let b: Sample = serde_json::from_value(as_strings).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.set, vec![1, 0, 2]);
        let c: Sample =
            serde_json::from_value(json!({"a":7.0,"port":1000,"set":[],"sets":[],"on":0})).unwrap();
        assert_eq!(c.a, 7);
        assert!(!c.on);
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        let base = json!({"a":1,"port":1,"set":[],"sets":[],"on":false});
        for (field, bad) in [
            ("a", json!("1.5")),
            ("a", json!(1.5)),
            ("a", json!(-1)),
            ("a", json!("-1")),
            ("a", json!("+1")),
            ("a", json!("")),
            ("a", json!(null)),
            ("a", json!([1])),
            ("port", json!(70000)),
            ("set", json!(["x"])),
            ("sets", json!([["1", "y"]])),
            ("on", json!("yes")),
            ("on", json!(2)),
        ] {
            let mut v = base.clone();
            v[field] = bad.clone();
            let err = serde_json::from_value::<Sample>(v).unwrap_err();
            assert!(!err.to_string().is_empty(), "{field}={bad}");
        }
    }

    #[test]
    fn loose_accessors() {
        assert_eq!(u64_of(&json!("42")), Some(42));
        assert_eq!(u64_of(&json!(42)), Some(42));
        assert_eq!(u64_of(&json!(" 42 ")), Some(42));
        assert_eq!(u64_of(&json!("4x")), None);
        assert_eq!(f64_of(&json!("1700000000.123")), Some(1700000000.123));
        assert_eq!(f64_of(&json!(1.5)), Some(1.5));
        assert_eq!(f64_of(&json!("nan")), None);
        assert_eq!(bool_of(&json!("true")), Some(true));
        assert_eq!(bool_of(&json!(0)), Some(false));
        assert_eq!(bool_of(&json!("maybe")), None);
        let v = json!({"size":"1024","time":"5.5"});
        assert_eq!(u64_field(&v, "size"), Some(1024));
        assert_eq!(f64_field(&v, "time"), Some(5.5));
        assert_eq!(u64_field(&v, "free"), None);
    }
}
