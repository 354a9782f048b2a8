//! Raw annotation lookup shared by every group: the two prefixes and
//! their precedence, value normalization, Go-compatible scalar parsing and
//! the Diagnostics for values that fail. Kept apart so that every group
//! reads and reports the same way ingress-nginx's `parser` package does.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::Diagnostic;

/// ingress-nginx's default `--annotations-prefix`.
pub(super) const NGINX: &str = "nginx.ingress.kubernetes.io/";
/// The prefix of pre-0.9 controllers, still found in old manifests.
pub(super) const LEGACY: &str = "ingress.kubernetes.io/";

pub(super) const INVALID: &str = "InvalidAnnotation";
pub(super) const UNSUPPORTED: &str = "UnsupportedAnnotationValue";

/// One annotation as found: the full key it came from (for messages) and
/// its normalized value (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Raw {
    pub key: String,
    pub value: String,
}

pub(super) struct Reader<'a> {
    pub object: &'a str,
    pub map: &'a BTreeMap<String, String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// ingress-nginx's `normalizeString`: every line trimmed; Ferry also trims
/// the whole value so that a YAML block scalar's final newline goes.
fn normalize(value: &str) -> String {
    let lines: Vec<&str> = value.split('\n').map(str::trim).collect();
    lines.join("\n").trim().to_string()
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl<'a> Reader<'a> {
    pub fn new(object: &'a str, map: &'a BTreeMap<String, String>) -> Reader<'a> {
        Reader {
            object,
            map,
            diagnostics: Vec::new(),
        }
    }

    /// The annotation `name`: a suffix looked up under the nginx prefix,
    /// then the legacy one (the nginx one wins); a name containing `/` is a
    /// full key (`ferry.dev/hsts`). Empty values count as unset.
    pub fn raw(&self, name: &str) -> Option<Raw> {
        // Called for every supported name of every Ingress change: no key
        // strings are built, and an Ingress without annotations costs
        // nothing.
        if self.map.is_empty() {
            return None;
        }
        // The keys under `prefix` sort together; `prefix + name` is among
        // them if it is there at all.
        let under = |prefix: &str| {
            self.map
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(prefix))
                .find(|(k, _)| &k[prefix.len()..] == name)
        };
        let hits = if name.contains('/') {
            [self.map.get_key_value(name), None]
        } else {
            [under(NGINX), under(LEGACY)]
        };
        let mut found: Option<Raw> = None;
        for (key, value) in hits.into_iter().flatten() {
            let value = normalize(value);
            if value.is_empty() {
                tracing::debug!(ingress = self.object, annotation = %key, "empty annotation ignored");
                continue;
            }
            match &found {
                None => {
                    found = Some(Raw {
                        key: key.clone(),
                        value,
                    })
                }
                Some(used) => tracing::debug!(
                    ingress = self.object,
                    ignored = %key,
                    used = %used.key,
                    "annotation set under both prefixes; the nginx.ingress.kubernetes.io one wins"
                ),
            }
        }
        found
    }

    /// `main`, else its alias (ingress-nginx's `AnnotationAliases`: the
    /// alias is read only when the main name is unset).
    pub fn raw_aliased(&self, main: &str, alias: &str) -> Option<Raw> {
        let main_value = self.raw(main);
        let alias_value = self.raw(alias);
        match (main_value, alias_value) {
            (Some(m), Some(a)) => {
                tracing::debug!(
                    ingress = self.object,
                    ignored = %a.key,
                    used = %m.key,
                    "annotation and its alias both set; the main name wins"
                );
                Some(m)
            }
            (m, a) => m.or(a),
        }
    }

    /// A string value; control characters (a multi-line value included)
    /// make it invalid, as ingress-nginx's `MaliciousRegex`.
    pub fn string(&mut self, name: &str) -> Option<Raw> {
        self.checked(self.raw(name))
    }

    /// [`Reader::string`] of an aliased annotation.
    pub fn string_aliased(&mut self, main: &str, alias: &str) -> Option<Raw> {
        self.checked(self.raw_aliased(main, alias))
    }

    fn checked(&mut self, raw: Option<Raw>) -> Option<Raw> {
        let raw = raw?;
        if raw.value.chars().any(char::is_control) {
            self.invalid(&raw, Some("control characters are not allowed"));
            return None;
        }
        Some(raw)
    }

    /// A Go `ParseBool` value; invalid ones are reported and unset.
    pub fn bool(&mut self, name: &str) -> Option<bool> {
        let raw = self.raw(name)?;
        let parsed = parse_go_bool(&raw.value);
        if parsed.is_none() {
            self.invalid(&raw, None);
        }
        parsed
    }

    /// A decimal integer (`Atoi`: optional sign, digits); invalid or out
    /// of range values are reported and unset.
    pub fn int<T: FromStr>(&mut self, name: &str) -> Option<T> {
        let raw = self.raw(name)?;
        let parsed = raw.value.parse::<T>().ok();
        if parsed.is_none() {
            self.invalid(&raw, None);
        }
        parsed
    }

    /// `raw` failed validation: the default applies. The message is
    /// ingress-nginx's, with the reason appended when there is one.
    pub fn invalid(&mut self, raw: &Raw, why: Option<&str>) {
        let mut message = format!(
            "annotation {} contains invalid value {:?}",
            raw.key, raw.value
        );
        if let Some(why) = why {
            message.push_str(": ");
            message.push_str(why);
        }
        self.warn(INVALID, message);
    }

    /// `raw` is valid for ingress-nginx but not something Ferry does.
    pub fn unsupported(&mut self, raw: &Raw, why: &str) {
        let message = format!("annotation {} value {:?}: {why}", raw.key, raw.value);
        self.warn(UNSUPPORTED, message);
    }

    pub fn warn(&mut self, reason: &'static str, message: String) {
        tracing::debug!(ingress = self.object, reason, %message, "annotation problem");
        self.diagnostics.push(Diagnostic {
            warning: true,
            reason,
            message,
        });
    }
}

/// Whether every character of `s` is ASCII alphanumeric or in `extra`.
pub(super) fn only(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// An RFC 6265 cookie name (an RFC 7230 token).
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && only(s, "!#$%&'*+-.^_`|~")
}
