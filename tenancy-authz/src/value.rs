//! Attribute values and interned attribute names.
//!
//! Conditions read attributes of the principal, the resource and the
//! request context. Attribute names are interned once into an [`AttrKey`]
//! (a small integer), so evaluating a condition compares integers, never
//! strings, and takes no lock.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Most distinct attribute names one process may intern.
pub const MAX_ATTRIBUTE_NAMES: usize = 65_536;

/// An attribute name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrNameError {
    /// The name is not 1 to 64 characters of `a-z`, `0-9` and `_` in
    /// dot-separated segments, each starting with a letter or `_`.
    #[error(
        "attribute name {name:?} must be 1 to 64 characters: dot-separated segments of a-z, 0-9 and '_', each starting with a letter or '_'"
    )]
    Invalid {
        /// The rejected name.
        name: String,
    },
    /// The process already interned [`MAX_ATTRIBUTE_NAMES`] names.
    #[error("too many distinct attribute names (at most {max})")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// Whether `name` is a valid attribute name.
pub(crate) fn valid_attr_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.split('.').all(|segment| {
            let mut chars = segment.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

struct Interner {
    ids: std::collections::HashMap<&'static str, u32, foldhash::fast::RandomState>,
    names: Vec<&'static str>,
}

fn interner() -> &'static RwLock<Interner> {
    static INTERNER: OnceLock<RwLock<Interner>> = OnceLock::new();
    INTERNER.get_or_init(|| {
        RwLock::new(Interner {
            ids: Default::default(),
            names: Vec::new(),
        })
    })
}

/// An interned attribute name, such as `owner` or `address.country`.
///
/// Interning happens when a request or a condition is built, never while a
/// decision is made. Names live for the rest of the process (at most
/// [`MAX_ATTRIBUTE_NAMES`]), so build keys from names your code defines,
/// not from client input.
///
/// ```
/// use tenancy_authz::AttrKey;
/// let owner = AttrKey::new("owner")?;
/// assert_eq!(owner, AttrKey::new("owner")?);
/// assert_eq!(owner.name(), "owner");
/// assert!(AttrKey::new("Owner").is_err());
/// # Ok::<(), tenancy_authz::AttrNameError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttrKey(u32);

impl AttrKey {
    /// Interns `name`, validating it.
    pub fn new(name: &str) -> Result<Self, AttrNameError> {
        if !valid_attr_name(name) {
            return Err(AttrNameError::Invalid {
                name: name.to_owned(),
            });
        }
        {
            let read = interner().read().unwrap_or_else(PoisonError::into_inner);
            if let Some(&id) = read.ids.get(name) {
                return Ok(Self(id));
            }
        }
        let mut write = interner().write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = write.ids.get(name) {
            return Ok(Self(id));
        }
        if write.names.len() >= MAX_ATTRIBUTE_NAMES {
            return Err(AttrNameError::TooMany {
                max: MAX_ATTRIBUTE_NAMES,
            });
        }
        let id = u32::try_from(write.names.len()).map_err(|_| AttrNameError::TooMany {
            max: MAX_ATTRIBUTE_NAMES,
        })?;
        // Leaked on purpose: names are few, bounded and live as long as the process.
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        write.names.push(leaked);
        write.ids.insert(leaked, id);
        Ok(Self(id))
    }

    /// The name.
    pub fn name(self) -> &'static str {
        let read = interner().read().unwrap_or_else(PoisonError::into_inner);
        read.names.get(self.0 as usize).copied().unwrap_or("?")
    }
}

impl fmt::Debug for AttrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttrKey({})", self.name())
    }
}

impl fmt::Display for AttrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Text that is not a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network {text:?}: expected an address and prefix length such as 10.0.0.0/8")]
pub struct CidrParseError {
    text: String,
}

impl Cidr {
    /// A network from an address and prefix length; host bits are cleared.
    /// `None` if the prefix is longer than the address.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        let network = match address {
            IpAddr::V4(v4) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            _ => return None,
        };
        Some(Self { network, prefix })
    }

    /// Whether `ip` is inside the network. IPv4 and IPv6 never match each other.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::new(ip, self.prefix).is_some_and(|masked| masked.network == self.network)
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError {
            text: text.to_owned(),
        };
        let (address, prefix) = text.split_once('/').ok_or_else(err)?;
        let address: IpAddr = address.parse().map_err(|_| err())?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Self::new(address, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An attribute value.
///
/// JSON and TOML request tables write strings, integers, booleans and
/// arrays as themselves, and typed values as one-key objects:
/// `{"ip": "10.1.2.3"}`, `{"cidr": "10.0.0.0/8"}`,
/// `{"time": "2030-01-01T09:00:00Z"}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// Text.
    Str(Arc<str>),
    /// A list of values.
    List(Arc<[Value]>),
    /// An IP address.
    Ip(IpAddr),
    /// An IP network.
    Cidr(Cidr),
    /// An instant.
    Time(OffsetDateTime),
}

impl Value {
    /// The type name used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Ip(_) => "ip",
            Value::Cidr(_) => "cidr",
            Value::Time(_) => "time",
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.into())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v.into())
    }
}
impl From<Arc<str>> for Value {
    fn from(v: Arc<str>) -> Self {
        Value::Str(v)
    }
}
impl From<IpAddr> for Value {
    fn from(v: IpAddr) -> Self {
        Value::Ip(v)
    }
}
impl From<Cidr> for Value {
    fn from(v: Cidr) -> Self {
        Value::Cidr(v)
    }
}
impl From<OffsetDateTime> for Value {
    fn from(v: OffsetDateTime) -> Self {
        Value::Time(v)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Ip(ip) => write!(f, "ip(\"{ip}\")"),
            Value::Cidr(c) => write!(f, "cidr(\"{c}\")"),
            Value::Time(t) => match t.format(&Rfc3339) {
                Ok(text) => write!(f, "time(\"{text}\")"),
                Err(_) => write!(f, "time({})", t.unix_timestamp()),
            },
        }
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Str(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Ip(ip) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("ip", &ip.to_string())?;
                map.end()
            }
            Value::Cidr(c) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("cidr", &c.to_string())?;
                map.end()
            }
            Value::Time(t) => {
                let mut map = serializer.serialize_map(Some(1))?;
                let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
                map.serialize_entry("time", &text)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        Value::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<serde_json::Value> for Value {
    type Error = String;
    fn try_from(raw: serde_json::Value) -> Result<Self, Self::Error> {
        use serde_json::Value as J;
        Ok(match raw {
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => Value::Int(
                n.as_i64()
                    .ok_or_else(|| format!("number {n} is not a 64-bit integer"))?,
            ),
            J::String(s) => Value::Str(s.into()),
            J::Array(items) => Value::List(
                items
                    .into_iter()
                    .map(Value::try_from)
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
            J::Object(map) if map.len() == 1 => {
                let (kind, text) = map
                    .into_iter()
                    .next()
                    .ok_or_else(|| "empty object".to_owned())?;
                let J::String(text) = text else {
                    return Err(format!("typed value {kind:?} must be a string"));
                };
                match kind.as_str() {
                    "ip" => Value::Ip(
                        text.parse()
                            .map_err(|_| format!("invalid ip address {text:?}"))?,
                    ),
                    "cidr" => Value::Cidr(text.parse().map_err(|e: CidrParseError| e.to_string())?),
                    "time" => Value::Time(
                        OffsetDateTime::parse(&text, &Rfc3339)
                            .map_err(|_| format!("invalid RFC 3339 time {text:?}"))?,
                    ),
                    other => {
                        return Err(format!(
                            "unknown typed value {other:?}: expected \"ip\", \"cidr\" or \"time\""
                        ));
                    }
                }
            }
            J::Object(_) => {
                return Err(
                    "objects are only typed values such as {\"ip\": \"10.0.0.1\"}".to_owned(),
                );
            }
            J::Null => return Err("null is not a value".to_owned()),
        })
    }
}

/// The attributes of a principal, a resource or a request context: a small
/// map from [`AttrKey`] to [`Value`], searched linearly (attribute sets are
/// small, and integer comparison beats hashing at that size).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes(Vec<(AttrKey, Value)>);

impl Attributes {
    /// No attributes.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: AttrKey, value: impl Into<Value>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Builder form of [`Attributes::insert`].
    pub fn with(mut self, key: AttrKey, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Builder form taking a name; fails if the name is invalid.
    pub fn try_with(self, name: &str, value: impl Into<Value>) -> Result<Self, AttrNameError> {
        Ok(self.with(AttrKey::new(name)?, value))
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: AttrKey) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every attribute, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (AttrKey, &Value)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.name(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::collections::BTreeMap::<String, Value>::deserialize(deserializer)?;
        let mut attrs = Attributes::new();
        for (name, value) in raw {
            attrs.insert(
                AttrKey::new(&name).map_err(serde::de::Error::custom)?,
                value,
            );
        }
        Ok(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let host: Cidr = "192.168.1.7/32".parse().unwrap();
        assert!(host.contains("192.168.1.7".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn attr_names() {
        for ok in ["owner", "address.country", "_x", "a1_b"] {
            assert_eq!(AttrKey::new(ok).unwrap().name(), ok);
        }
        for bad in ["", "Owner", "1a", "a..b", "a.", "a-b", &"a".repeat(65)] {
            assert!(AttrKey::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_from_json() {
        let v: Value = serde_json::from_str(
            r#"[1, "a", true, {"ip": "10.0.0.1"}, {"time": "2030-01-01T00:00:00Z"}]"#,
        )
        .unwrap();
        let Value::List(items) = &v else { panic!() };
        assert_eq!(items.len(), 5);
        assert_eq!(items[3], Value::Ip("10.0.0.1".parse().unwrap()));
        let back = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&back).unwrap(), v);
        assert!(serde_json::from_str::<Value>("1.5").is_err());
        assert!(serde_json::from_str::<Value>(r#"{"ip": "nope"}"#).is_err());
        assert!(serde_json::from_str::<Value>("null").is_err());
    }
}
