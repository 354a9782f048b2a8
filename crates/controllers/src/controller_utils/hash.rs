//! The pod-template hash (`pod-template-hash`,
//! `controller-revision-hash`) and int-or-percent values such as
//! `maxSurge: 25%`.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// Characters Kubernetes uses for generated names and hashes (no vowels,
/// so no words; no 0/1/3 that read as letters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Upstream's `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// 32-bit FNV-1a, the hash upstream uses for pod templates.
#[derive(Clone, Copy)]
pub struct Fnv32a(u32);

impl Fnv32a {
    pub fn new() -> Self {
        Fnv32a(0x811c_9dc5)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }

    pub fn finish(self) -> u32 {
        self.0
    }
}

impl Default for Fnv32a {
    fn default() -> Self {
        Self::new()
    }
}

/// JSON with object keys sorted, so the hash does not depend on field order.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The `pod-template-hash` of a template: FNV-1a of its canonical JSON
/// and the collision count, rendered as upstream renders it (the decimal
/// value, safe-encoded), e.g. `7d9f8c5b4`.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    write_canonical(
        &serde_json::to_value(template).unwrap_or(Value::Null),
        &mut text,
    );
    let mut h = Fnv32a::new();
    h.write(text.as_bytes());
    if let Some(c) = collision_count {
        h.write(&(c as u32).to_le_bytes());
    }
    safe_encode(&h.finish().to_string())
}

// ----- int-or-percent ------------------------------------------------------

/// Upstream's `GetScaledValueFromIntOrPercent`: an int as is, `"25%"` of
/// `total`, rounded up or down.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(number) = s.strip_suffix('%') else {
                if let Ok(i) = s.parse::<i32>() {
                    return Ok(i);
                }
                return Err(format!("invalid value for IntOrString: {s:?}"));
            };
            let percent: i64 = number
                .parse()
                .map_err(|_| format!("invalid value for IntOrString: {s:?}"))?;
            let product = percent * i64::from(total);
            let value = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(value).map_err(|_| format!("{s:?} of {total} is out of range"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn hash_renders_like_upstream() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }))
        .unwrap();
        let h = template_hash(&t, None);
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_eq!(h, template_hash(&t.clone(), None), "stable");
        assert_ne!(h, template_hash(&t, Some(1)), "collision count changes it");
        let mut other = t.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert_ne!(h, template_hash(&other, None));
        // FNV-1a reference values.
        let mut f = Fnv32a::new();
        f.write(b"a");
        assert_eq!(f.finish(), 0xe40c_292c);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn percentages_round_as_upstream() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(&p("25%"), 3, true), Ok(1));
        assert_eq!(scaled_value(&p("25%"), 3, false), Ok(0));
        assert_eq!(scaled_value(&p("25%"), 4, false), Ok(1));
        assert_eq!(scaled_value(&p("50%"), 5, true), Ok(3));
        assert_eq!(scaled_value(&IntOrString::Int(2), 10, false), Ok(2));
        assert_eq!(scaled_value(&p("3"), 10, false), Ok(3));
        assert!(scaled_value(&p("x%"), 10, false).is_err());
        assert!(scaled_value(&p("abc"), 10, false).is_err());
    }

    proptest! {
        #[test]
        fn percent_rounding_brackets_the_exact_value(percent in 0i64..200, total in 0i32..1000) {
            let v = IntOrString::String(format!("{percent}%"));
            let up = scaled_value(&v, total, true).unwrap();
            let down = scaled_value(&v, total, false).unwrap();
            let exact = percent as f64 * f64::from(total) / 100.0;
            prop_assert!(f64::from(down) <= exact && exact <= f64::from(up));
            prop_assert!(up - down <= 1);
        }
    }
}
