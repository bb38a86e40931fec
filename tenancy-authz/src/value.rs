//! Attribute values and attribute names.
//!
//! Conditions read attributes of the principal, the resource and the
//! request context. An attribute name is validated once into an [`AttrKey`]
//! that carries its hash, so looking an attribute up compares one integer
//! and, on a match, a short string: no string is hashed and no lock is
//! taken while a decision is made.
//!
//! There is no process-wide table of names: a key owns its name, and the
//! names a tenant's policies use live in that tenant's compiled
//! conditions and go with them. Tenants can write any number of attribute
//! names without affecting one another.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 64;

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
}

/// Whether `name` is a valid attribute name.
pub(crate) fn valid_attr_name(name: &str) -> bool {
    (1..=MAX_ATTRIBUTE_NAME_LEN).contains(&name.len())
        && name.split('.').all(|segment| {
            let mut chars = segment.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// The hash every key carries: fixed, so keys built anywhere agree.
/// Equal hashes are confirmed by comparing the names, so a collision costs
/// a string comparison, never a wrong match.
fn name_hash(name: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7465_6e61_6e63_7921).hash_one(name)
}

/// A validated attribute name, such as `owner` or `address.country`.
///
/// Build keys once (when a request or a condition is built), not while a
/// decision is made: a key carries its name's hash, and names up to 22
/// bytes in place, so a lookup compares integers and confirms a match by
/// comparing two small arrays. Cloning one is cheap (a longer name is
/// shared).
///
/// ```
/// use tenancy_authz::AttrKey;
/// let owner = AttrKey::new("owner")?;
/// assert_eq!(owner, AttrKey::new("owner")?);
/// assert_eq!(owner.name(), "owner");
/// assert!(AttrKey::new("Owner").is_err());
/// # Ok::<(), tenancy_authz::AttrNameError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AttrKey {
    hash: u64,
    name: Name,
}

/// Most bytes of a name kept in place.
const INLINE: usize = 22;

/// A name, in place when short (almost always), so comparing two compares
/// two small arrays: no pointer to follow, no allocation, no reference
/// count to touch when a key is cloned.
#[derive(Clone, PartialEq, Eq)]
enum Name {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl Name {
    fn new(name: &str) -> Self {
        let mut bytes = [0; INLINE];
        match (bytes.get_mut(..name.len()), u8::try_from(name.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(name.as_bytes());
                Name::Inline { len, bytes }
            }
            _ => Name::Shared(name.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Names are ASCII, so any prefix is valid UTF-8.
            Name::Inline { len, bytes } => bytes
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            Name::Shared(name) => name,
        }
    }
}

impl AttrKey {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, AttrNameError> {
        if !valid_attr_name(name) {
            return Err(AttrNameError::Invalid {
                name: name.to_owned(),
            });
        }
        Ok(Self {
            hash: name_hash(name),
            name: Name::new(name),
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Whether this key names `name`, without building a key.
    #[inline]
    fn is(&self, hash: u64, name: &str) -> bool {
        self.hash == hash && self.name.as_str() == name
    }
}

impl Hash for AttrKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for AttrKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AttrKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.name().cmp(other.name())
    }
}

impl FromStr for AttrKey {
    type Err = AttrNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
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
#[non_exhaustive]
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
/// small, and comparing the keys' hashes beats a hash map at that size).
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
    pub fn get(&self, key: &AttrKey) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of the attribute called `name`.
    pub fn get_named(&self, name: &str) -> Option<&Value> {
        let hash = name_hash(name);
        self.0
            .iter()
            .find(|(k, _)| k.is(hash, name))
            .map(|(_, v)| v)
    }

    /// Every attribute, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&AttrKey, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
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
        for ok in ["owner", "address.country", "_x", "a1_b", &"a".repeat(64)] {
            assert_eq!(AttrKey::new(ok).unwrap().name(), ok);
        }
        for bad in ["", "Owner", "1a", "a..b", "a.", "a-b", &"a".repeat(65)] {
            assert!(AttrKey::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_compare_by_name() {
        let a = AttrKey::new("owner").unwrap();
        let b = AttrKey::new("owner").unwrap();
        let c = AttrKey::new("owners").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a < c);
        let attrs = Attributes::new().with(a, 1).with(c.clone(), 2).with(b, 3);
        assert_eq!(attrs.len(), 2, "an equal key replaces");
        assert_eq!(attrs.get_named("owner"), Some(&Value::Int(3)));
        assert_eq!(attrs.get(&c), Some(&Value::Int(2)));
        assert_eq!(attrs.get_named("own"), None);
        // Short names are kept in place, longer ones shared: both compare
        // by name.
        for len in [21, 22, 23, 64] {
            let name = "a".repeat(len);
            let key = AttrKey::new(&name).unwrap();
            assert_eq!(key.name(), name);
            assert_eq!(key, AttrKey::new(&name).unwrap());
            assert_eq!(key, key.clone());
            assert_ne!(key, AttrKey::new(&"a".repeat(len - 1)).unwrap());
            let attrs = Attributes::new().with(key.clone(), len as i64);
            assert_eq!(attrs.get(&key), Some(&Value::Int(len as i64)));
            assert_eq!(attrs.get_named(&name), Some(&Value::Int(len as i64)));
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
